//! Every CQL statement the ScyllaDB store runs, prepared once when the store opens, and the
//! schema file turned into statements for a given keyspace.
//!
//! Each statement names one partition in its WHERE clause (or VALUES), so each store call
//! stays a single statement or a single-partition batch; the texts are public so tests can
//! check that rule and so a fake server can recognise them.

use super::OpenError;
use scylla::client::session::Session;
use scylla::statement::Consistency;
use scylla::statement::prepared::PreparedStatement;

/// The schema file, in the `troupe` keyspace with replication factor 3 (replaced at open).
const SCHEMA: &str = include_str!("../../../../schema/cql/001_init.cql");

/// Rows per page for the reads that may be long; smaller pages bound the memory a page takes
/// and still cost few round trips for a page of history.
pub(crate) const PAGE_SIZE: i32 = 500;

/// How a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// A read: idempotent, paged.
    Read,
    /// A read at SERIAL consistency: a Paxos read, which sees every committed LWT on the
    /// partition and first completes one still in flight. Idempotent, paged.
    SerialRead,
    /// A plain write that may be retried as is.
    Write,
    /// A conditional write (lightweight transaction), or a statement only ever used inside a
    /// conditional batch: never retried blindly, since it may have applied.
    Conditional,
}

macro_rules! statements {
    ($($name:ident: $kind:ident = $text:literal;)*) => {
        /// The prepared statements, one field per statement.
        pub(super) struct Statements {
            $(pub(super) $name: PreparedStatement,)*
        }

        /// (name, kind, text with `{ks}` for the keyspace) of every statement.
        const TEMPLATES: &[(&str, StatementKind, &str)] = &[$((stringify!($name), StatementKind::$kind, $text),)*];

        impl Statements {
            /// Prepares every statement for `keyspace`.
            pub(super) async fn prepare(session: &Session, keyspace: &str) -> Result<Statements, OpenError> {
                Ok(Statements {
                    $($name: prepare(session, keyspace, StatementKind::$kind, $text).await?,)*
                })
            }
        }
    };
}

statements! {
    insert_user: Conditional =
        "INSERT INTO {ks}.users (user_id, username, nickname, avatar_url, created_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS";
    select_user: Read = "SELECT user_id, username, nickname, avatar_url, created_at FROM {ks}.users WHERE user_id = ?";
    delete_user: Conditional = "DELETE FROM {ks}.users WHERE user_id = ? IF EXISTS";
    update_profile: Conditional = "UPDATE {ks}.users SET nickname = ?, avatar_url = ? WHERE user_id = ? IF EXISTS";
    claim_username: Conditional =
        "INSERT INTO {ks}.usernames (username, user_id, password_hash) VALUES (?, ?, ?) IF NOT EXISTS";
    select_credential: Read = "SELECT user_id, password_hash FROM {ks}.usernames WHERE username = ?";
    insert_session: Write =
        "INSERT INTO {ks}.sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?) USING TTL ?";
    select_session: Read = "SELECT user_id, created_at, expires_at FROM {ks}.sessions WHERE token_hash = ?";
    delete_session: Write = "DELETE FROM {ks}.sessions WHERE token_hash = ?";

    insert_group: Conditional =
        "INSERT INTO {ks}.groups (group_id, name, owner, open, max_members, member_count, created_at, dissolved, epoch) \
         VALUES (?, ?, ?, ?, ?, 1, ?, ?, 0) IF NOT EXISTS";
    insert_owner: Conditional = "INSERT INTO {ks}.groups (group_id, user_id, role, joined_at) VALUES (?, ?, ?, ?)";
    select_epoch: Read = "SELECT epoch FROM {ks}.groups WHERE group_id = ? LIMIT 1";
    claim_epoch: Conditional = "UPDATE {ks}.groups SET epoch = ? WHERE group_id = ? IF epoch = ?";
    select_group: Read =
        "SELECT group_id, name, owner, open, max_members, member_count, created_at, dissolved FROM {ks}.groups \
         WHERE group_id = ? LIMIT 1";
    select_member: Read = "SELECT user_id, role, joined_at FROM {ks}.groups WHERE group_id = ? AND user_id = ?";
    select_members: Read =
        "SELECT user_id, role, joined_at FROM {ks}.groups WHERE group_id = ? AND user_id > ? LIMIT ?";
    select_cap: Read =
        "SELECT member_count, max_members, dissolved, epoch FROM {ks}.groups WHERE group_id = ? LIMIT 1";
    add_member: Conditional =
        "UPDATE {ks}.groups SET member_count = ?, role = ?, joined_at = ? WHERE group_id = ? AND user_id = ? \
         IF epoch = ? AND member_count = ? AND dissolved = false AND role = null";
    lower_count: Conditional =
        "UPDATE {ks}.groups SET member_count = ? WHERE group_id = ? IF epoch = ? AND member_count = ?";
    delete_member: Conditional = "DELETE FROM {ks}.groups WHERE group_id = ? AND user_id = ? IF role != null";
    set_role: Conditional =
        "UPDATE {ks}.groups SET role = ? WHERE group_id = ? AND user_id = ? IF epoch = ? AND role != null";
    set_owner: Conditional = "UPDATE {ks}.groups SET owner = ? WHERE group_id = ? IF epoch = ?";
    change_role: Conditional = "UPDATE {ks}.groups SET role = ? WHERE group_id = ? AND user_id = ? IF role != null";
    update_group: Conditional =
        "UPDATE {ks}.groups SET name = ?, open = ?, epoch = ? WHERE group_id = ? IF epoch = ?";
    dissolve_group: Conditional = "UPDATE {ks}.groups SET dissolved = true WHERE group_id = ? IF epoch = ?";
    set_retention_days: Conditional = "UPDATE {ks}.groups SET retention_days = ? WHERE group_id = ? IF epoch = ?";
    select_retention: Read = "SELECT retention_days, trimmed_through FROM {ks}.groups WHERE group_id = ? LIMIT 1";
    // A trim moves the point only while the retention is the one it was decided under.
    set_trimmed: Conditional = "UPDATE {ks}.groups SET trimmed_through = ? WHERE group_id = ? \
         IF trimmed_through = ? AND retention_days = ?";
    set_first_trimmed: Conditional = "UPDATE {ks}.groups SET trimmed_through = ? WHERE group_id = ? \
         IF trimmed_through = null AND retention_days = ?";
    // The retention sweeper's work list: the one statement that reads across partitions, a
    // scan in token order (PER PARTITION LIMIT 1: the static columns once per group).
    scan_retained_groups: Read =
        "SELECT group_id, retention_days, trimmed_through FROM {ks}.groups PER PARTITION LIMIT 1";
    scan_retained_groups_after: Read =
        "SELECT group_id, retention_days, trimmed_through FROM {ks}.groups WHERE token(group_id) > token(?) \
         PER PARTITION LIMIT 1";

    link_user_group: Conditional =
        "INSERT INTO {ks}.user_groups (user_id, group_id, read_seq, joined_at) VALUES (?, ?, ?, ?) IF NOT EXISTS";
    unlink_user_group: Conditional = "DELETE FROM {ks}.user_groups WHERE user_id = ? AND group_id = ? IF EXISTS";
    select_user_groups: Read = "SELECT group_id, read_seq, joined_at FROM {ks}.user_groups WHERE user_id = ?";
    select_user_group: Read =
        "SELECT group_id, read_seq, joined_at FROM {ks}.user_groups WHERE user_id = ? AND group_id = ?";
    advance_read_mark: Conditional =
        "UPDATE {ks}.user_groups SET read_seq = ? WHERE user_id = ? AND group_id = ? IF read_seq < ?";

    fence_bucket: Conditional =
        "UPDATE {ks}.messages SET epoch = ? WHERE group_id = ? AND bucket = ? IF epoch < ?";
    fence_new_bucket: Conditional =
        "UPDATE {ks}.messages SET epoch = ? WHERE group_id = ? AND bucket = ? IF epoch = null";
    select_bucket_last: Read = "SELECT last_seq FROM {ks}.messages WHERE group_id = ? AND bucket = ? LIMIT 1";
    select_bucket_last_serial: SerialRead =
        "SELECT last_seq, epoch FROM {ks}.messages WHERE group_id = ? AND bucket = ? LIMIT 1";
    open_bucket: Conditional =
        "UPDATE {ks}.messages SET last_seq = ? WHERE group_id = ? AND bucket = ? IF last_seq = null AND epoch = ?";
    extend_bucket: Conditional =
        "UPDATE {ks}.messages SET last_seq = ? WHERE group_id = ? AND bucket = ? IF last_seq = ? AND epoch = ?";
    insert_message: Conditional =
        "INSERT INTO {ks}.messages (group_id, bucket, seq, sender, client_msg_id, kind, body, ts) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
    select_after: Read =
        "SELECT group_id, seq, sender, client_msg_id, kind, body, ts FROM {ks}.messages \
         WHERE group_id = ? AND bucket = ? AND seq > ? LIMIT ?";
    select_before: Read =
        "SELECT group_id, seq, sender, client_msg_id, kind, body, ts FROM {ks}.messages \
         WHERE group_id = ? AND bucket = ? AND seq < ? ORDER BY seq DESC LIMIT ?";
    insert_client_id: Write =
        "INSERT INTO {ks}.client_msg_ids (group_id, sender, client_msg_id, seq, ts) VALUES (?, ?, ?, ?, ?)";
    trim_bucket: Write = "DELETE FROM {ks}.messages WHERE group_id = ? AND bucket = ? AND seq > ? AND seq <= ?";
    select_client_id: Read =
        "SELECT seq, ts FROM {ks}.client_msg_ids WHERE group_id = ? AND sender = ? AND client_msg_id = ?";

    apply_entry: Conditional =
        "UPDATE {ks}.wallet_ledger SET balance = ?, amount = ?, kind = ?, packet = ?, ts = ? \
         WHERE user_id = ? AND entry_id = ? IF balance = ? AND amount = null";
    apply_first_entry: Conditional =
        "UPDATE {ks}.wallet_ledger SET balance = ?, amount = ?, kind = ?, packet = ?, ts = ? \
         WHERE user_id = ? AND entry_id = ? IF balance = null AND amount = null";
    select_balance: Read = "SELECT balance FROM {ks}.wallet_ledger WHERE user_id = ? LIMIT 1";
    // entry_id is not used: it keeps the text apart from select_balance's, since logs and
    // the offline tests' fake name a statement by its text.
    select_balance_serial: SerialRead = "SELECT balance, entry_id FROM {ks}.wallet_ledger WHERE user_id = ? LIMIT 1";
    select_ledger_entry_serial: SerialRead =
        "SELECT entry_id, amount, kind, packet, ts, balance FROM {ks}.wallet_ledger WHERE user_id = ? AND entry_id = ?";
    select_ledger: Read =
        "SELECT entry_id, amount, kind, packet, ts FROM {ks}.wallet_ledger WHERE user_id = ? LIMIT ?";

    // group_id is not used: it keeps the text apart from select_epoch's (see above).
    select_group_epoch_serial: SerialRead = "SELECT group_id, epoch FROM {ks}.groups WHERE group_id = ? LIMIT 1";
    insert_red_packet: Conditional =
        "INSERT INTO {ks}.red_packets (packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, \
         created_at, expires_at, state, epoch, next_share) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) IF NOT EXISTS";
    select_red_packet: Read =
        "SELECT packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, created_at, expires_at, \
         state FROM {ks}.red_packets WHERE packet_id = ? LIMIT 1";
    select_red_packet_serial: SerialRead =
        "SELECT packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, created_at, expires_at, \
         state, epoch, next_share FROM {ks}.red_packets WHERE packet_id = ? LIMIT 1";
    fence_red_packet: Conditional = "UPDATE {ks}.red_packets SET epoch = ? WHERE packet_id = ? IF epoch < ?";
    move_red_packet: Conditional =
        "UPDATE {ks}.red_packets SET state = ? WHERE packet_id = ? IF state = ? AND epoch = ?";
    grab_share: Conditional =
        "UPDATE {ks}.red_packets SET next_share = ?, share = ?, amount = ?, ts = ? WHERE packet_id = ? AND user_id = ? \
         IF next_share = ? AND epoch = ? AND state = 'open' AND share = null";
    select_grab_serial: SerialRead =
        "SELECT user_id, share, amount, ts FROM {ks}.red_packets WHERE packet_id = ? AND user_id = ?";
    select_grabs: Read = "SELECT user_id, share, amount, ts FROM {ks}.red_packets WHERE packet_id = ?";
    insert_due: Write = "INSERT INTO {ks}.red_packets_due (bucket, due_at, packet_id, group_id) VALUES (?, ?, ?, ?)";
    delete_due: Write = "DELETE FROM {ks}.red_packets_due WHERE bucket = ? AND due_at = ? AND packet_id = ?";
    select_due: Read =
        "SELECT due_at, group_id, packet_id FROM {ks}.red_packets_due WHERE bucket = ? AND due_at <= ? LIMIT ?";

    insert_media: Conditional =
        "INSERT INTO {ks}.media (media_id, uploader, kind, mime, size, sha256, width, height, thumb_width, \
         thumb_height, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    select_media: Read =
        "SELECT media_id, uploader, kind, mime, size, sha256, width, height, thumb_width, thumb_height, \
         created_at FROM {ks}.media WHERE media_id = ? LIMIT 1";
    select_media_groups: Read = "SELECT group_id FROM {ks}.media WHERE media_id = ?";
    link_media_group: Write = "INSERT INTO {ks}.media (media_id, group_id) VALUES (?, ?)";
    delete_media: Write = "DELETE FROM {ks}.media WHERE media_id = ?";
    insert_unsent_media: Write = "INSERT INTO {ks}.unsent_media (bucket, due_at, media_id) VALUES (?, ?, ?)";
    delete_unsent_media: Write = "DELETE FROM {ks}.unsent_media WHERE bucket = ? AND due_at = ? AND media_id = ?";
    select_unsent_media: Read =
        "SELECT due_at, media_id FROM {ks}.unsent_media WHERE bucket = ? AND due_at <= ? LIMIT ?";

    select_media_bytes: Read = "SELECT bytes FROM {ks}.user_media_bytes WHERE user_id = ?";
    // user_id is not used: it keeps the text apart from select_media_bytes's (see above).
    select_media_bytes_serial: SerialRead = "SELECT bytes, user_id FROM {ks}.user_media_bytes WHERE user_id = ?";
    set_media_bytes: Conditional = "UPDATE {ks}.user_media_bytes SET bytes = ? WHERE user_id = ? IF bytes = ?";
    set_first_media_bytes: Conditional =
        "UPDATE {ks}.user_media_bytes SET bytes = ? WHERE user_id = ? IF bytes = null";
}

/// (name, kind, text) of every statement the store prepares for `keyspace`.
pub fn statement_texts(keyspace: &str) -> Vec<(&'static str, StatementKind, String)> {
    TEMPLATES.iter().map(|(name, kind, text)| (*name, *kind, text.replace("{ks}", keyspace))).collect()
}

async fn prepare(
    session: &Session,
    keyspace: &str,
    kind: StatementKind,
    template: &str,
) -> Result<PreparedStatement, OpenError> {
    let text = template.replace("{ks}", keyspace);
    let mut statement =
        session.prepare(text.as_str()).await.map_err(|e| OpenError::Prepare(text.clone(), e.to_string()))?;
    match kind {
        StatementKind::Read => {
            statement.set_is_idempotent(true);
            statement.set_page_size(PAGE_SIZE);
        }
        StatementKind::SerialRead => {
            statement.set_is_idempotent(true);
            statement.set_page_size(PAGE_SIZE);
            statement.set_consistency(Consistency::Serial);
        }
        StatementKind::Write => statement.set_is_idempotent(true),
        StatementKind::Conditional => statement.set_is_idempotent(false),
    }
    Ok(statement)
}

/// Whether `keyspace` can be spliced into CQL unquoted: a CQL identifier ScyllaDB accepts
/// for a keyspace (letters, digits, underscores, at most 48, not starting with a digit).
pub fn valid_keyspace(keyspace: &str) -> bool {
    !keyspace.is_empty()
        && keyspace.len() <= 48
        && keyspace.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !keyspace.starts_with(|c: char| c.is_ascii_digit())
}

/// The statements of `schema/cql/001_init.cql` for `keyspace` and `replication_factor`, in
/// file order: comments dropped, split on `;`.
pub fn schema_statements(keyspace: &str, replication_factor: u32) -> Result<Vec<String>, OpenError> {
    if !valid_keyspace(keyspace) {
        return Err(OpenError::Config(format!("{keyspace:?} is not a valid keyspace name")));
    }
    if replication_factor == 0 {
        return Err(OpenError::Config("the replication factor must be at least 1".into()));
    }
    let text: String =
        SCHEMA.lines().map(|line| line.split_once("--").map_or(line, |(code, _)| code)).collect::<Vec<_>>().join("\n");
    let mut statements = Vec::new();
    for raw in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let statement = if raw.starts_with("CREATE KEYSPACE") {
            let named = replace_once(raw, "CREATE KEYSPACE IF NOT EXISTS troupe", || {
                format!("CREATE KEYSPACE IF NOT EXISTS {keyspace}")
            })?;
            replace_once(&named, "'replication_factor': 3", || format!("'replication_factor': {replication_factor}"))?
        } else {
            replace_once(raw, "CREATE TABLE IF NOT EXISTS troupe.", || {
                format!("CREATE TABLE IF NOT EXISTS {keyspace}.")
            })?
        };
        statements.push(statement);
    }
    Ok(statements)
}

/// Replaces the one occurrence of `anchor`; an error if the schema file no longer has it
/// exactly once, since a silent miss would create tables in the wrong keyspace.
fn replace_once(text: &str, anchor: &str, with: impl FnOnce() -> String) -> Result<String, OpenError> {
    if text.matches(anchor).count() != 1 {
        return Err(OpenError::Config(format!("schema statement without exactly one `{anchor}`: {text}")));
    }
    Ok(text.replacen(anchor, &with(), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_becomes_one_statement_per_object_in_the_chosen_keyspace() {
        let statements = schema_statements("troupe_test_1", 1).unwrap();
        assert_eq!(statements.len(), 14, "a keyspace and thirteen tables: {statements:#?}");
        assert!(statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS troupe_test_1"));
        assert!(statements[0].contains("'replication_factor': 1"));
        assert!(statements[0].contains("'enabled': false"), "LWTs need a keyspace without tablets");
        for statement in &statements[1..] {
            assert!(statement.starts_with("CREATE TABLE IF NOT EXISTS troupe_test_1."), "{statement}");
        }
        for statement in &statements {
            assert!(!statement.contains("--"), "comments are gone: {statement}");
            assert!(!statement.replace("troupe_test_1", "").contains("troupe"), "{statement}");
        }
        let messages = statements.iter().find(|s| s.contains(".messages (")).unwrap();
        assert!(messages.contains("epoch          bigint static"), "the log carries its own fence");
    }

    #[test]
    fn bad_keyspaces_and_factors_are_refused() {
        for keyspace in ["", "has space", "quote\"d", "semi;colon", "9lives", &"k".repeat(49)] {
            assert!(matches!(schema_statements(keyspace, 3), Err(OpenError::Config(_))), "{keyspace:?}");
        }
        assert!(matches!(schema_statements("troupe", 0), Err(OpenError::Config(_))));
        assert!(schema_statements("Troupe_2", 3).is_ok());
    }

    /// An INSERT's (column, value) pairs, None if its column and VALUES lists do not pair up.
    fn insert_values(text: &str) -> Option<Vec<(&str, &str)>> {
        let (_, rest) = text.split_once('(')?;
        let (columns, rest) = rest.split_once(')')?;
        let (_, rest) = rest.split_once("VALUES (")?;
        let (values, _) = rest.split_once(')')?;
        let columns: Vec<&str> = columns.split(',').map(str::trim).collect();
        let values: Vec<&str> = values.split(',').map(str::trim).collect();
        (columns.len() == values.len()).then(|| columns.into_iter().zip(values).collect())
    }

    #[test]
    fn insert_values_pair_columns_with_values() {
        let text = "INSERT INTO ks.t (a, b, c) VALUES (?, 1, ?) IF NOT EXISTS";
        assert_eq!(insert_values(text), Some(vec![("a", "?"), ("b", "1"), ("c", "?")]));
        assert_eq!(insert_values("INSERT INTO ks.t (a, b) VALUES (?)"), None);
    }

    /// The partition of each statement, from its text: every WHERE clause pins the whole
    /// partition key with `=`, every INSERT binds each partition key column to one value,
    /// and conditional statements say IF (or run in a conditional batch, which the store
    /// builds around one partition).
    #[test]
    fn every_statement_names_one_partition() {
        let partition_keys = [
            ("users", &["user_id"][..]),
            ("usernames", &["username"]),
            ("sessions", &["token_hash"]),
            ("groups", &["group_id"]),
            ("user_groups", &["user_id"]),
            ("messages", &["group_id", "bucket"]),
            ("client_msg_ids", &["group_id", "sender"]),
            ("wallet_ledger", &["user_id"]),
            ("red_packets", &["packet_id"]),
            ("red_packets_due", &["bucket"]),
            ("media", &["media_id"]),
            ("unsent_media", &["bucket"]),
            ("user_media_bytes", &["user_id"]),
        ];
        for (name, kind, text) in statement_texts("ks") {
            if name.starts_with("scan_") {
                assert!(text.starts_with("SELECT") && matches!(kind, StatementKind::Read), "{name} only reads");
                continue;
            }
            let table = text
                .split_whitespace()
                .find_map(|word| word.strip_prefix("ks."))
                .unwrap_or_else(|| panic!("{name} names no table in the keyspace: {text}"));
            let (_, keys) = partition_keys.iter().find(|(t, _)| *t == table).expect("a known table");
            let inserted = if text.starts_with("INSERT") {
                Some(insert_values(&text).unwrap_or_else(|| panic!("{name}: columns and VALUES differ: {text}")))
            } else {
                None
            };
            for key in *keys {
                let pinned = match &inserted {
                    Some(pairs) => pairs.contains(&(*key, "?")),
                    None => text.contains(&format!("WHERE {key} = ?")) || text.contains(&format!("AND {key} = ?")),
                };
                assert!(pinned, "{name} does not pin {key}: {text}");
            }
            assert!(!text.contains(" IN "), "{name}: one partition, not several");
            let conditional = text.contains(" IF ");
            match kind {
                StatementKind::Read | StatementKind::SerialRead => assert!(text.starts_with("SELECT"), "{name}"),
                StatementKind::Write => assert!(!conditional, "{name} is a plain write"),
                StatementKind::Conditional => {}
            }
            if name.contains("select") {
                assert!(matches!(kind, StatementKind::Read | StatementKind::SerialRead), "{name}");
            }
        }
    }

    /// Logs and the offline tests' fake node name a statement by its text.
    #[test]
    fn statement_texts_are_distinct() {
        let texts = statement_texts("ks");
        let distinct: std::collections::HashSet<&str> = texts.iter().map(|(_, _, text)| text.as_str()).collect();
        assert_eq!(distinct.len(), texts.len());
    }

    #[test]
    fn keyspace_names_are_checked_like_cql_identifiers() {
        assert!(valid_keyspace("troupe"));
        assert!(valid_keyspace("troupe_test_0123abcd"));
        assert!(!valid_keyspace("troupe-test"));
        assert!(!valid_keyspace("a.b"));
    }
}
