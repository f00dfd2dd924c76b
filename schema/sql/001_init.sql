-- troupe on PostgreSQL: the layout the PostgreSQL backend creates (node/src/store/postgres.rs).
--
-- Each store call in actors/src/store/mod.rs touches the rows of one "partition" (a user,
-- a username, a group with its members, a group's log) and runs as one statement or one
-- transaction over those rows, so the same calls fit ScyllaDB (schema/cql/). Ids are
-- BIGINT (they stay below 2^53); times are milliseconds since the epoch.

CREATE TABLE IF NOT EXISTS troupe_meta (
  key    TEXT PRIMARY KEY,
  value  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
  user_id     BIGINT PRIMARY KEY,
  username    TEXT NOT NULL,
  nickname    TEXT NOT NULL,
  avatar_url  TEXT NOT NULL,
  created_at  BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS usernames (
  username       TEXT PRIMARY KEY,
  user_id        BIGINT NOT NULL,
  password_hash  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
  token_hash  BYTEA PRIMARY KEY,
  user_id     BIGINT NOT NULL,
  created_at  BIGINT NOT NULL,
  expires_at  BIGINT NOT NULL
);

-- The group row. Every fenced write locks it (SELECT epoch ... FOR UPDATE, or FOR SHARE for
-- appends) and compares the epoch in the same transaction, so a deposed owner writes nothing
-- and the cap holds under concurrent writers.
CREATE TABLE IF NOT EXISTS groups (
  group_id      BIGINT PRIMARY KEY,
  name          TEXT NOT NULL,
  owner         BIGINT NOT NULL,
  open          BOOLEAN NOT NULL,
  max_members   INTEGER NOT NULL,
  member_count  INTEGER NOT NULL,
  created_at    BIGINT NOT NULL,
  dissolved     BOOLEAN NOT NULL DEFAULT FALSE,
  epoch         BIGINT NOT NULL DEFAULT 0
);
-- Databases created before the fence existed.
ALTER TABLE groups ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 0;
-- Message retention: days to keep messages (0: forever), and the seq through which the log
-- has been deleted. Seqs are never reused, so an emptied log's last seq is trimmed_through.
ALTER TABLE groups ADD COLUMN IF NOT EXISTS retention_days INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN IF NOT EXISTS trimmed_through BIGINT NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS members (
  group_id   BIGINT NOT NULL,
  user_id    BIGINT NOT NULL,
  role       TEXT NOT NULL,
  joined_at  BIGINT NOT NULL,
  PRIMARY KEY (group_id, user_id)
);

CREATE TABLE IF NOT EXISTS user_groups (
  user_id    BIGINT NOT NULL,
  group_id   BIGINT NOT NULL,
  read_seq   BIGINT NOT NULL,
  joined_at  BIGINT NOT NULL,
  PRIMARY KEY (user_id, group_id)
);

-- The log. (group_id, seq) is the fence: two writers appending after the same seq cannot
-- both insert it. (group_id, sender, client_msg_id) answers resends.
CREATE TABLE IF NOT EXISTS messages (
  group_id       BIGINT NOT NULL,
  seq            BIGINT NOT NULL,
  sender         BIGINT NOT NULL,
  client_msg_id  TEXT NOT NULL,
  kind           TEXT NOT NULL,
  body           TEXT NOT NULL,
  ts             BIGINT NOT NULL,
  PRIMARY KEY (group_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_client_id ON messages (group_id, sender, client_msg_id);

-- Wallets: one partition per user. A ledger entry and the balance it moves change in one
-- transaction, so the balance is always the sum of the user's ledger; entry ids make each
-- entry happen once.
CREATE TABLE IF NOT EXISTS wallet_balances (
  user_id  BIGINT PRIMARY KEY,
  balance  BIGINT NOT NULL CHECK (balance >= 0)
);

CREATE TABLE IF NOT EXISTS wallet_ledger (
  user_id   BIGINT NOT NULL,
  entry_id  TEXT NOT NULL,
  amount    BIGINT NOT NULL,
  kind      TEXT NOT NULL,
  packet    BIGINT,
  ts        BIGINT NOT NULL,
  PRIMARY KEY (user_id, entry_id)
);

-- A red packet and its grabs: one partition per packet. Its writes are fenced by its
-- group's epoch (the group row is locked FOR SHARE in the same transaction).
CREATE TABLE IF NOT EXISTS red_packets (
  packet_id      BIGINT PRIMARY KEY,
  group_id       BIGINT NOT NULL,
  sender         BIGINT NOT NULL,
  client_msg_id  TEXT NOT NULL,
  total          BIGINT NOT NULL,
  kind           TEXT NOT NULL,
  greeting       TEXT NOT NULL,
  shares         BIGINT[] NOT NULL,
  created_at     BIGINT NOT NULL,
  expires_at     BIGINT NOT NULL,
  state          TEXT NOT NULL,
  next_share     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS red_packet_grabs (
  packet_id  BIGINT NOT NULL,
  user_id    BIGINT NOT NULL,
  share      INTEGER NOT NULL,
  amount     BIGINT NOT NULL,
  ts         BIGINT NOT NULL,
  PRIMARY KEY (packet_id, user_id),
  UNIQUE (packet_id, share)
);

-- What the red packet sweeper must look at, by due time.
CREATE TABLE IF NOT EXISTS red_packets_due (
  due_at     BIGINT NOT NULL,
  packet_id  BIGINT NOT NULL,
  group_id   BIGINT NOT NULL,
  PRIMARY KEY (due_at, packet_id)
);

-- Media metadata (the bytes are in object storage): one partition per media object, with
-- the groups it was sent to, and one per user for the bytes they hold (the quota).
CREATE TABLE IF NOT EXISTS media (
  media_id    BIGINT PRIMARY KEY,
  uploader    BIGINT NOT NULL,
  kind        TEXT NOT NULL,
  mime        TEXT NOT NULL,
  size        BIGINT NOT NULL,
  sha256      TEXT NOT NULL,
  width         INTEGER,
  height        INTEGER,
  thumb_width   INTEGER,
  thumb_height  INTEGER,
  created_at    BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS media_groups (
  media_id  BIGINT NOT NULL,
  group_id  BIGINT NOT NULL,
  PRIMARY KEY (media_id, group_id)
);

CREATE TABLE IF NOT EXISTS user_media_bytes (
  user_id  BIGINT PRIMARY KEY,
  bytes    BIGINT NOT NULL CHECK (bytes >= 0)
);

-- Media to delete at due_at unless sent by then (the node's sweeper checks their links).
CREATE TABLE IF NOT EXISTS unsent_media (
  due_at    BIGINT NOT NULL,
  media_id  BIGINT NOT NULL,
  PRIMARY KEY (due_at, media_id)
);
