//! From CQL rows to records, and from driver errors to `StoreError`.
//!
//! Rows are read as tuples of `Option`s in the order the SELECT names its columns, so a null
//! where a record needs a value, a negative id, an unknown role or kind, or a column of the
//! wrong type all surface as `StoreError::Corrupt`, never as a panic. Conditional writes
//! answer with `[applied]` and the old values of the columns they tested; [`Lwt`] reads those
//! by column name, so it does not depend on how a server orders or pads them.

use actors::store::{StoreError, StoreResult};
use schema::frames::{MessageKind, Role};
use schema::records::*;
use schema::{GroupId, MediaId, RedPacketId, UserId};
use scylla::errors::{
    DbError, ExecutionError, NextPageError, NextRowError, PagerExecutionError, PrepareError, RequestAttemptError,
    RequestError,
};
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

/// `SELECT user_id, username, nickname, avatar_url, created_at`.
pub type UserRow = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<i64>);
/// `SELECT user_id, password_hash`.
pub type CredentialRow = (Option<i64>, Option<String>);
/// `SELECT user_id, created_at, expires_at`.
pub type SessionRow = (Option<i64>, Option<i64>, Option<i64>);
/// `SELECT group_id, name, owner, open, max_members, member_count, created_at, dissolved`.
pub type GroupRow =
    (Option<i64>, Option<String>, Option<i64>, Option<bool>, Option<i32>, Option<i32>, Option<i64>, Option<bool>);
/// `SELECT user_id, role, joined_at` from a group's partition.
pub type MemberRow = (Option<i64>, Option<String>, Option<i64>);
/// `SELECT group_id, read_seq, joined_at` from a user's partition.
pub type LinkRow = (Option<i64>, Option<i64>, Option<i64>);
/// `SELECT group_id, seq, sender, client_msg_id, kind, body, ts`.
pub type MessageRow =
    (Option<i64>, Option<i64>, Option<i64>, Option<String>, Option<String>, Option<String>, Option<i64>);
/// `SELECT member_count, max_members, dissolved, epoch` (the static row of a group).
pub type CapRow = (Option<i32>, Option<i32>, Option<bool>, Option<i64>);
/// `SELECT entry_id, amount, kind, packet, ts` from a wallet's partition.
pub type LedgerRow = (Option<String>, Option<i64>, Option<String>, Option<i64>, Option<i64>);
/// `SELECT entry_id, amount, kind, packet, ts, balance`: one entry and the wallet's balance.
pub type LedgerBalanceRow = (Option<String>, Option<i64>, Option<String>, Option<i64>, Option<i64>, Option<i64>);
/// `SELECT packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares,
/// created_at, expires_at, state` (the static row of a red packet).
pub type RedPacketRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<i64>>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);
/// [`RedPacketRow`] followed by `epoch, next_share`: what a fenced write reads first.
pub type StoredRedPacketRow = (
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<Vec<i64>>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i32>,
);
/// `SELECT user_id, share, amount, ts` from a red packet's partition.
pub type GrabRow = (Option<i64>, Option<i32>, Option<i64>, Option<i64>);
/// `SELECT due_at, group_id, packet_id` from the due index.
pub type DueRow = (Option<i64>, Option<i64>, Option<i64>);
/// `SELECT due_at, media_id` from the index of unsent media.
pub type UnsentRow = (Option<i64>, Option<i64>);
/// `SELECT media_id, uploader, kind, mime, size, sha256, width, height, thumb_width,
/// thumb_height, created_at` (the static row of a media object).
pub type MediaRow = (
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// A driver error: the request may or may not have been applied (a timeout is ambiguous),
/// and the same request may well succeed later.
pub fn driver(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("scylla: {error}"))
}

/// A value that does not fit the record it should become, or a request the server refused
/// as written: not transient, so retrying cannot help.
pub fn corrupt(error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("scylla: {error}"))
}

/// Whether the server refused the request as written: it never applied, and the same
/// request would be refused again. A bad statement (syntax, an unknown column, a
/// conditional batch that spans partitions: all `Invalid`), missing rights, or a request
/// the server could not parse are bugs or misconfiguration, not an unavailable store.
fn refused_as_written(error: &DbError) -> bool {
    matches!(
        error,
        DbError::SyntaxError
            | DbError::Invalid
            | DbError::AlreadyExists { .. }
            | DbError::FunctionFailure { .. }
            | DbError::AuthenticationError
            | DbError::Unauthorized
            | DbError::ConfigError
            | DbError::ProtocolError
    )
}

/// Whether a failed attempt is permanent: the server refused it as written, or the driver
/// could not even build it. Timeouts, overload, unavailable replicas and broken connections
/// are not.
fn permanent(error: &RequestAttemptError) -> bool {
    match error {
        RequestAttemptError::DbError(error, _) => refused_as_written(error),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_)
        | RequestAttemptError::RepreparedIdChanged { .. }
        | RequestAttemptError::RepreparedIdMissingInBatch => true,
        _ => false,
    }
}

fn prepare_is_permanent(error: &PrepareError) -> bool {
    matches!(error, PrepareError::AllAttemptsFailed { first_attempt } if permanent(first_attempt))
}

/// An error from executing a statement: `Corrupt` (with the server's message) if it was
/// refused as written, `Unavailable` if it may be transient or may have applied.
pub fn execution(error: ExecutionError) -> StoreError {
    let is_permanent = match &error {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::LastAttemptError(attempt) => permanent(attempt),
        ExecutionError::PrepareError(prepare) => prepare_is_permanent(prepare),
        _ => false,
    };
    if is_permanent { corrupt(error) } else { driver(error) }
}

/// An error from starting a paged read: a page that does not fit the row type is corrupt
/// data, a request refused as written too, anything else the driver's.
pub fn pager(error: PagerExecutionError) -> StoreError {
    match error {
        PagerExecutionError::NextPageError(error) => next_page(error),
        PagerExecutionError::SerializationError(_) => corrupt(error),
        PagerExecutionError::PrepareError(ref prepare) if prepare_is_permanent(prepare) => corrupt(error),
        other => driver(other),
    }
}

/// An error from reading the next row of a paged read.
pub fn next_row(error: NextRowError) -> StoreError {
    match error {
        NextRowError::NextPageError(error) => next_page(error),
        NextRowError::RowDeserializationError(error) => corrupt(error),
        other => driver(other),
    }
}

fn next_page(error: NextPageError) -> StoreError {
    match error {
        NextPageError::TypeCheckError(_) | NextPageError::ResultMetadataParseError(_) => corrupt(error),
        NextPageError::RequestFailure(RequestError::LastAttemptError(ref attempt)) if permanent(attempt) => {
            corrupt(error)
        }
        other => driver(other),
    }
}

/// Ids and seqs are stored as bigint; they stay below 2^53, so saturating never happens for
/// real data and cannot wrap for a bad caller.
pub fn id(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A required column.
pub fn required<T>(value: Option<T>, column: &str) -> StoreResult<T> {
    value.ok_or_else(|| StoreError::Corrupt(format!("scylla: {column} is null")))
}

/// A required column holding an id, a seq or a time: never negative.
pub fn unsigned(value: Option<i64>, column: &str) -> StoreResult<u64> {
    let value = required(value, column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("scylla: {column} is negative ({value})")))
}

/// A required int column holding a count or a cap: never negative.
pub fn count(value: Option<i32>, column: &str) -> StoreResult<u32> {
    let value = required(value, column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("scylla: {column} is negative ({value})")))
}

fn role_of(text: &str) -> StoreResult<Role> {
    Role::parse(text).ok_or_else(|| StoreError::Corrupt(format!("scylla: unknown role {text:?}")))
}

/// A message kind from the name `MessageKind::as_str` wrote.
fn kind_of(text: &str) -> StoreResult<MessageKind> {
    Ok(match text {
        "text" => MessageKind::Text,
        "image" => MessageKind::Image,
        "audio" => MessageKind::Audio,
        "video" => MessageKind::Video,
        "file" => MessageKind::File,
        "red_packet" => MessageKind::RedPacket,
        _ => return Err(StoreError::Corrupt(format!("scylla: unknown message kind {text:?}"))),
    })
}

/// A user row.
pub fn user(row: UserRow) -> StoreResult<UserRecord> {
    let (user_id, username, nickname, avatar_url, created_at) = row;
    Ok(UserRecord {
        id: UserId(unsigned(user_id, "users.user_id")?),
        username: required(username, "users.username")?,
        // A profile field never set reads as null; the record's empty string means the same.
        nickname: nickname.unwrap_or_default(),
        avatar_url: avatar_url.unwrap_or_default(),
        created_at: unsigned(created_at, "users.created_at")?,
    })
}

/// A username's credential row.
pub fn credential(row: CredentialRow) -> StoreResult<CredentialRecord> {
    let (user_id, password_hash) = row;
    Ok(CredentialRecord {
        user: UserId(unsigned(user_id, "usernames.user_id")?),
        password_hash: required(password_hash, "usernames.password_hash")?,
    })
}

/// A session row.
pub fn session(row: SessionRow) -> StoreResult<SessionRecord> {
    let (user_id, created_at, expires_at) = row;
    Ok(SessionRecord {
        user: UserId(unsigned(user_id, "sessions.user_id")?),
        created_at: unsigned(created_at, "sessions.created_at")?,
        expires_at: unsigned(expires_at, "sessions.expires_at")?,
    })
}

/// A group's static row.
pub fn group(row: GroupRow) -> StoreResult<GroupRecord> {
    let (group_id, name, owner, open, max_members, member_count, created_at, dissolved) = row;
    Ok(GroupRecord {
        id: GroupId(unsigned(group_id, "groups.group_id")?),
        name: required(name, "groups.name")?,
        owner: UserId(unsigned(owner, "groups.owner")?),
        open: required(open, "groups.open")?,
        max_members: count(max_members, "groups.max_members")?,
        member_count: count(member_count, "groups.member_count")?,
        created_at: unsigned(created_at, "groups.created_at")?,
        dissolved: required(dissolved, "groups.dissolved")?,
    })
}

/// A member row; None for the row a partition with only static columns answers with.
pub fn member(row: MemberRow) -> StoreResult<Option<MemberRecord>> {
    let (user_id, role, joined_at) = row;
    if user_id.is_none() {
        return Ok(None);
    }
    Ok(Some(MemberRecord {
        user: UserId(unsigned(user_id, "groups.user_id")?),
        role: role_of(&required(role, "groups.role")?)?,
        joined_at: unsigned(joined_at, "groups.joined_at")?,
    }))
}

/// A row of a user's group index.
pub fn link(row: LinkRow) -> StoreResult<UserGroupRecord> {
    let (group_id, read_seq, joined_at) = row;
    Ok(UserGroupRecord {
        group: GroupId(unsigned(group_id, "user_groups.group_id")?),
        read_seq: unsigned(read_seq, "user_groups.read_seq")?,
        joined_at: unsigned(joined_at, "user_groups.joined_at")?,
    })
}

/// A message row; None for the row a bucket with only static columns answers with.
pub fn message(row: MessageRow) -> StoreResult<Option<MessageRecord>> {
    let (group_id, seq, sender, client_msg_id, kind, body, ts) = row;
    if seq.is_none() {
        return Ok(None);
    }
    Ok(Some(MessageRecord {
        group: GroupId(unsigned(group_id, "messages.group_id")?),
        seq: unsigned(seq, "messages.seq")?,
        sender: UserId(unsigned(sender, "messages.sender")?),
        client_msg_id: required(client_msg_id, "messages.client_msg_id")?,
        kind: kind_of(&required(kind, "messages.kind")?)?,
        body: required(body, "messages.body")?,
        ts: unsigned(ts, "messages.ts")?,
    }))
}

/// A ledger row; None for the row a wallet with only its balance answers with.
pub fn ledger_entry(row: LedgerRow) -> StoreResult<Option<LedgerEntry>> {
    let (entry_id, amount, kind, packet, ts) = row;
    let Some(id) = entry_id else { return Ok(None) };
    let kind = required(kind, "wallet_ledger.kind")?;
    Ok(Some(LedgerEntry {
        id,
        amount: required(amount, "wallet_ledger.amount")?,
        kind: LedgerKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("scylla: unknown ledger kind {kind:?}")))?,
        // Entries that belong to no packet leave the column unset.
        packet: packet.map(|p| unsigned(Some(p), "wallet_ledger.packet").map(RedPacketId)).transpose()?,
        ts: unsigned(ts, "wallet_ledger.ts")?,
    }))
}

/// A ledger entry with the wallet's balance; None if the entry is not there.
pub fn ledger_entry_and_balance(row: LedgerBalanceRow) -> StoreResult<Option<(LedgerEntry, i64)>> {
    let (entry_id, amount, kind, packet, ts, balance) = row;
    let Some(entry) = ledger_entry((entry_id, amount, kind, packet, ts))? else { return Ok(None) };
    // Every entry was written together with the balance, so a null one is not a wallet we wrote.
    Ok(Some((entry, required(balance, "wallet_ledger.balance")?)))
}

/// A red packet's static row.
pub fn red_packet(row: RedPacketRow) -> StoreResult<RedPacketRecord> {
    let (packet_id, group_id, sender, client_msg_id, total, kind, greeting, shares, created_at, expires_at, state) =
        row;
    let kind = required(kind, "red_packets.kind")?;
    let state = required(state, "red_packets.state")?;
    Ok(RedPacketRecord {
        id: RedPacketId(unsigned(packet_id, "red_packets.packet_id")?),
        group: GroupId(unsigned(group_id, "red_packets.group_id")?),
        sender: UserId(unsigned(sender, "red_packets.sender")?),
        client_msg_id: required(client_msg_id, "red_packets.client_msg_id")?,
        total: required(total, "red_packets.total")?,
        kind: RedPacketKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("scylla: unknown red packet kind {kind:?}")))?,
        greeting: required(greeting, "red_packets.greeting")?,
        // An empty collection may read back as null.
        shares: shares.unwrap_or_default(),
        created_at: unsigned(created_at, "red_packets.created_at")?,
        expires_at: unsigned(expires_at, "red_packets.expires_at")?,
        state: RedPacketState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("scylla: unknown red packet state {state:?}")))?,
    })
}

/// A red packet with the two columns only its writers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRedPacket {
    /// The packet.
    pub record: RedPacketRecord,
    /// The epoch of the group owner that last wrote it.
    pub epoch: u64,
    /// Shares handed out so far.
    pub next_share: u32,
}

/// A red packet's static row with its epoch and share count.
pub fn stored_red_packet(row: StoredRedPacketRow) -> StoreResult<StoredRedPacket> {
    let (
        packet_id,
        group_id,
        sender,
        client_msg_id,
        total,
        kind,
        greeting,
        shares,
        created_at,
        expires_at,
        state,
        epoch,
        next,
    ) = row;
    let record = red_packet((
        packet_id,
        group_id,
        sender,
        client_msg_id,
        total,
        kind,
        greeting,
        shares,
        created_at,
        expires_at,
        state,
    ))?;
    Ok(StoredRedPacket {
        record,
        epoch: unsigned(epoch, "red_packets.epoch")?,
        next_share: count(next, "red_packets.next_share")?,
    })
}

/// A grab row; None for the row a packet nobody grabbed answers with.
pub fn grab(row: GrabRow) -> StoreResult<Option<GrabRecord>> {
    let (user_id, share, amount, ts) = row;
    if user_id.is_none() {
        return Ok(None);
    }
    Ok(Some(GrabRecord {
        user: UserId(unsigned(user_id, "red_packets.user_id")?),
        share: count(share, "red_packets.share")?,
        amount: required(amount, "red_packets.amount")?,
        ts: unsigned(ts, "red_packets.ts")?,
    }))
}

/// A row of the due index: (due time, group, packet).
pub fn due(row: DueRow) -> StoreResult<(u64, GroupId, RedPacketId)> {
    let (due_at, group_id, packet_id) = row;
    Ok((
        unsigned(due_at, "red_packets_due.due_at")?,
        GroupId(unsigned(group_id, "red_packets_due.group_id")?),
        RedPacketId(unsigned(packet_id, "red_packets_due.packet_id")?),
    ))
}

/// A row of the index of unsent media: (due time, media).
pub fn unsent(row: UnsentRow) -> StoreResult<(u64, MediaId)> {
    let (due_at, media_id) = row;
    Ok((unsigned(due_at, "unsent_media.due_at")?, MediaId(unsigned(media_id, "unsent_media.media_id")?)))
}

/// A media object's static row; None for the row a partition answers with when it holds
/// links but no record (every static column null: a link that outlived a delete).
pub fn media(row: MediaRow) -> StoreResult<Option<MediaRecord>> {
    let (media_id, uploader, kind, mime, size, sha256, width, height, thumb_width, thumb_height, created_at) = row;
    if uploader.is_none()
        && kind.is_none()
        && mime.is_none()
        && size.is_none()
        && sha256.is_none()
        && width.is_none()
        && height.is_none()
        && thumb_width.is_none()
        && thumb_height.is_none()
        && created_at.is_none()
    {
        return Ok(None);
    }
    let dimension = |value: Option<i64>, column: &str| -> StoreResult<u32> {
        let value = unsigned(value, column)?;
        u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("scylla: {column} is too large ({value})")))
    };
    // One INSERT writes both or neither, so one without the other is not a record we wrote.
    let dimensions = match (width, height) {
        (None, None) => None,
        (width, height) => Some((dimension(width, "media.width")?, dimension(height, "media.height")?)),
    };
    let thumbnail = match (thumb_width, thumb_height) {
        (None, None) => None,
        (width, height) => Some((dimension(width, "media.thumb_width")?, dimension(height, "media.thumb_height")?)),
    };
    Ok(Some(MediaRecord {
        id: MediaId(unsigned(media_id, "media.media_id")?),
        uploader: UserId(unsigned(uploader, "media.uploader")?),
        kind: kind_of(&required(kind, "media.kind")?)?,
        mime: required(mime, "media.mime")?,
        size: unsigned(size, "media.size")?,
        sha256: required(sha256, "media.sha256")?,
        dimensions,
        thumbnail,
        created_at: unsigned(created_at, "media.created_at")?,
    }))
}

/// What a conditional write answered: whether it applied, and the rows that came with it
/// (the old values of the tested columns; for a batch, one row per conditional statement on
/// ScyllaDB), as (column name, value) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct Lwt {
    /// `[applied]`.
    pub applied: bool,
    rows: Vec<Vec<(String, Option<CqlValue>)>>,
}

impl Lwt {
    /// Reads a conditional write's answer.
    pub fn from_result(result: QueryResult) -> StoreResult<Lwt> {
        let rows = result.into_rows_result().map_err(|e| corrupt(format!("a conditional write answered: {e}")))?;
        let names: Vec<String> = rows.column_specs().iter().map(|spec| spec.name().to_owned()).collect();
        let mut decoded = Vec::new();
        for row in rows.rows::<Row>().map_err(corrupt)? {
            let row = row.map_err(corrupt)?;
            decoded.push(names.iter().cloned().zip(row.columns).collect::<Vec<_>>());
        }
        Lwt::from_rows(decoded)
    }

    /// The answer from its rows (used by tests to forge answers).
    pub fn from_rows(rows: Vec<Vec<(String, Option<CqlValue>)>>) -> StoreResult<Lwt> {
        let first = rows.first().ok_or_else(|| corrupt("a conditional write answered no row"))?;
        let applied = match first.iter().find(|(name, _)| name == "[applied]") {
            Some((_, Some(CqlValue::Boolean(applied)))) => *applied,
            other => return Err(corrupt(format!("a conditional write answered [applied] = {other:?}"))),
        };
        Ok(Lwt { applied, rows })
    }

    /// The first non-null value of `column` in any row.
    fn value(&self, column: &str) -> Option<&CqlValue> {
        self.rows.iter().flatten().find_map(|(name, value)| if name == column { value.as_ref() } else { None })
    }

    /// An int column's old value (None: null or not returned).
    pub fn int(&self, column: &str) -> StoreResult<Option<i32>> {
        match self.value(column) {
            None => Ok(None),
            Some(CqlValue::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(corrupt(format!("{column} came back as {other:?}"))),
        }
    }

    /// A bigint column's old value (None: null or not returned).
    pub fn bigint(&self, column: &str) -> StoreResult<Option<i64>> {
        match self.value(column) {
            None => Ok(None),
            Some(CqlValue::BigInt(v)) => Ok(Some(*v)),
            Some(other) => Err(corrupt(format!("{column} came back as {other:?}"))),
        }
    }

    /// A text column's old value.
    pub fn text(&self, column: &str) -> StoreResult<Option<&str>> {
        match self.value(column) {
            None => Ok(None),
            Some(CqlValue::Text(v)) | Some(CqlValue::Ascii(v)) => Ok(Some(v)),
            Some(other) => Err(corrupt(format!("{column} came back as {other:?}"))),
        }
    }

    /// A boolean column's old value.
    pub fn boolean(&self, column: &str) -> StoreResult<Option<bool>> {
        match self.value(column) {
            None => Ok(None),
            Some(CqlValue::Boolean(v)) => Ok(Some(*v)),
            Some(other) => Err(corrupt(format!("{column} came back as {other:?}"))),
        }
    }

    /// How many rows have a non-null `column` (for a batch: how many of the rows it tested
    /// exist).
    pub fn rows_with(&self, column: &str) -> usize {
        self.rows.iter().filter(|row| row.iter().any(|(name, value)| name == column && value.is_some())).count()
    }

    /// The epoch the write found, for a refused fence; None if null (no group, or a log
    /// bucket never fenced).
    pub fn epoch(&self) -> StoreResult<Option<u64>> {
        match self.bigint("epoch")? {
            None => Ok(None),
            Some(epoch) => Ok(Some(u64::try_from(epoch).map_err(|_| corrupt(format!("epoch is negative ({epoch})")))?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_message() -> MessageRow {
        (Some(7), Some(3), Some(9), Some("c1".into()), Some("red_packet".into()), Some("{\"a\":1}".into()), Some(1234))
    }

    #[test]
    fn rows_become_records() {
        let message = message(good_message()).unwrap().unwrap();
        assert_eq!(
            message,
            MessageRecord {
                group: GroupId(7),
                seq: 3,
                sender: UserId(9),
                client_msg_id: "c1".into(),
                kind: MessageKind::RedPacket,
                body: "{\"a\":1}".into(),
                ts: 1234,
            }
        );
        let group =
            group((Some(5), Some("g".into()), Some(1), Some(true), Some(10), Some(2), Some(99), Some(false))).unwrap();
        assert_eq!((group.id, group.max_members, group.member_count, group.open), (GroupId(5), 10, 2, true));
        let member = member((Some(4), Some("admin".into()), Some(8))).unwrap().unwrap();
        assert_eq!((member.user, member.role, member.joined_at), (UserId(4), Role::Admin, 8));
        let user = user((Some(1), Some("ann".into()), None, Some("u".into()), Some(2))).unwrap();
        assert_eq!((user.nickname.as_str(), user.avatar_url.as_str()), ("", "u"), "unset profile fields read empty");
        assert_eq!(link((Some(3), Some(0), Some(1))).unwrap().read_seq, 0);
        assert_eq!(session((Some(1), Some(2), Some(3))).unwrap().expires_at, 3);
        assert_eq!(credential((Some(1), Some("$argon2id$".into()))).unwrap().user, UserId(1));
    }

    fn good_media() -> MediaRow {
        let (id, uploader, kind, mime, size) =
            (Some(5), Some(7), Some("image".into()), Some("image/png".into()), Some(10));
        let sha = Some("ab".repeat(32));
        // Width and height 640 × 480, the thumbnail 320 × 240.
        (id, uploader, kind, mime, size, sha, Some(640), Some(480), Some(320), Some(240), Some(9))
    }

    #[test]
    fn media_rows_become_records() {
        let record = media(good_media()).unwrap().unwrap();
        assert_eq!((record.id, record.uploader, record.kind), (MediaId(5), UserId(7), MessageKind::Image));
        assert_eq!((record.size, record.dimensions, record.created_at), (10, Some((640, 480)), 9));
        assert_eq!(record.thumbnail, Some((320, 240)), "a thumbnail round-trips");
        let mut file = good_media();
        (file.2, file.6, file.7, file.8, file.9) = (Some("file".into()), None, None, None, None);
        let file = media(file).unwrap().unwrap();
        assert_eq!(file.dimensions, None, "no width and height: no dimensions");
        assert_eq!(file.thumbnail, None, "no thumb_width and thumb_height: no thumbnail");
        let mut undecoded = good_media();
        (undecoded.8, undecoded.9) = (None, None);
        let undecoded = media(undecoded).unwrap().unwrap();
        assert_eq!((undecoded.dimensions, undecoded.thumbnail), (Some((640, 480)), None), "dimensions alone");
        let links_only = (Some(5), None, None, None, None, None, None, None, None, None, None);
        assert_eq!(media(links_only).unwrap(), None, "links without a record");
        for (name, kind) in [("text", MessageKind::Text), ("audio", MessageKind::Audio), ("video", MessageKind::Video)]
        {
            assert_eq!(kind_of(name).unwrap(), kind);
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn static_only_rows_are_not_members_or_messages() {
        assert_eq!(member((None, None, None)).unwrap(), None);
        assert_eq!(message((Some(7), None, None, None, None, None, None)).unwrap(), None);
    }

    #[test]
    fn bad_rows_are_corrupt() {
        let mut cases: Vec<StoreResult<()>> = Vec::new();
        let mut bad_kind = good_message();
        bad_kind.4 = Some("hologram".into());
        cases.push(message(bad_kind).map(drop));
        let mut no_body = good_message();
        no_body.5 = None;
        cases.push(message(no_body).map(drop));
        let mut negative_seq = good_message();
        negative_seq.1 = Some(-3);
        cases.push(message(negative_seq).map(drop));
        cases.push(member((Some(4), Some("emperor".into()), Some(8))).map(drop));
        cases.push(member((Some(4), None, Some(8))).map(drop));
        cases.push(
            group((Some(5), Some("g".into()), Some(1), Some(true), Some(-1), Some(2), Some(9), Some(false))).map(drop),
        );
        cases.push(group((Some(5), None, Some(1), Some(true), Some(10), Some(2), Some(9), Some(false))).map(drop));
        cases.push(user((Some(1), None, None, None, Some(2))).map(drop));
        cases.push(link((Some(3), None, Some(1))).map(drop));
        cases.push(session((Some(1), Some(2), Some(-3))).map(drop));
        cases.push(credential((None, Some("x".into()))).map(drop));
        let mut one_dimension = good_media();
        one_dimension.7 = None;
        cases.push(media(one_dimension).map(drop));
        let mut huge_width = good_media();
        huge_width.6 = Some(i64::from(u32::MAX) + 1);
        cases.push(media(huge_width).map(drop));
        let mut one_thumbnail_side = good_media();
        one_thumbnail_side.9 = None;
        cases.push(media(one_thumbnail_side).map(drop));
        let mut huge_thumbnail = good_media();
        huge_thumbnail.8 = Some(i64::from(u32::MAX) + 1);
        cases.push(media(huge_thumbnail).map(drop));
        let mut negative_thumbnail = good_media();
        negative_thumbnail.9 = Some(-1);
        cases.push(media(negative_thumbnail).map(drop));
        let mut bad_media_kind = good_media();
        bad_media_kind.2 = Some("hologram".into());
        cases.push(media(bad_media_kind).map(drop));
        let mut no_sha = good_media();
        no_sha.5 = None;
        cases.push(media(no_sha).map(drop));
        for (i, case) in cases.into_iter().enumerate() {
            assert!(matches!(case, Err(StoreError::Corrupt(_))), "case {i}: {case:?}");
        }
    }

    fn lwt(rows: &[&[(&str, Option<CqlValue>)]]) -> StoreResult<Lwt> {
        Lwt::from_rows(
            rows.iter()
                .map(|row| row.iter().map(|(name, value)| (name.to_string(), value.clone())).collect())
                .collect(),
        )
    }

    #[test]
    fn conditional_answers_are_read_by_column_name() {
        // ScyllaDB's answer to a refused batch: one row per conditional statement.
        let answer = lwt(&[
            &[("[applied]", Some(CqlValue::Boolean(false))), ("epoch", Some(CqlValue::BigInt(4))), ("role", None)],
            &[
                ("[applied]", Some(CqlValue::Boolean(false))),
                ("epoch", None),
                ("role", Some(CqlValue::Text("owner".into()))),
            ],
            &[("[applied]", Some(CqlValue::Boolean(false))), ("epoch", None), ("role", None)],
        ])
        .unwrap();
        assert!(!answer.applied);
        assert_eq!(answer.epoch().unwrap(), Some(4));
        assert_eq!(answer.rows_with("role"), 1, "one of the two members is missing");
        assert_eq!(answer.bigint("member_count").unwrap(), None, "a column not returned reads as null");
        assert!(lwt(&[&[("[applied]", Some(CqlValue::Boolean(true)))]]).unwrap().applied);
    }

    #[test]
    fn malformed_conditional_answers_are_corrupt() {
        assert!(matches!(lwt(&[]), Err(StoreError::Corrupt(_))), "no row");
        assert!(matches!(lwt(&[&[("epoch", Some(CqlValue::BigInt(1)))]]), Err(StoreError::Corrupt(_))), "no [applied]");
        assert!(matches!(lwt(&[&[("[applied]", None)]]), Err(StoreError::Corrupt(_))), "null [applied]");
        let wrong_type = lwt(&[&[("[applied]", Some(CqlValue::Boolean(false))), ("epoch", Some(CqlValue::Int(1)))]]);
        assert!(matches!(wrong_type.unwrap().epoch(), Err(StoreError::Corrupt(_))));
        let negative = lwt(&[&[("[applied]", Some(CqlValue::Boolean(false))), ("epoch", Some(CqlValue::BigInt(-1)))]]);
        assert!(matches!(negative.unwrap().epoch(), Err(StoreError::Corrupt(_))));
    }
}
