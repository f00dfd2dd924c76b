// The wire types of troupe's client protocol (schema/PROTOCOL.md), written by hand from the
// Rust types in schema/src/frames/ and node/src/media.rs. Names are the Rust names, so a
// reader can go from one side to the other without a map.
//
// Two checks keep this file honest: test/unit/protocol.test.ts compares the lists here
// (ops, error codes, events, enums) with the Rust sources and the doc, and
// scripts/doc-examples.mjs type-checks every JSON example of PROTOCOL.md against these
// types with `satisfies`, so a field the doc shows and these types lack fails `tsc`.
//
// Serde, read the Rust way round: an `Option` the node serialises is `T | null` (always
// present); one with `skip_serializing_if` is `field?: T` (absent, never null). Request
// fields with `#[serde(default)]` are optional here (`field?: T`): absent means the default.

// ---------------------------------------------------------------------------------------
// Ids and numbers

/** A user's id. Every id is an integer below 2^53, so a plain JS number holds it exactly. */
export type UserId = number;
/** A group's id. */
export type GroupId = number;
/** A message's position in its group's log: 1, 2, 3, ... without gaps (0 = no message yet). */
export type Seq = number;
/** An uploaded media object's id (`POST /media`), sent as a message body `{"media": id}`. */
export type MediaId = number;
/** A red packet's id, from its `message` event's body; what `grab_red_packet` names. */
export type PacketId = number;
/** A face-to-face session's id, as `start_face_to_face` and `join_face_to_face` name it. */
export type FaceSessionId = number;

/** Unread counts stop here; a client shows "99+" when `unread` is this value. */
export const UNREAD_CAP = 100;

// ---------------------------------------------------------------------------------------
// Ops, error codes, close reasons

/** Every op, in the order of the Rust `requests!` macro (and of PROTOCOL.md §4). */
export const OPS = [
  "register",
  "login",
  "auth",
  "logout",
  "ping",
  "profile",
  "update_profile",
  "create_group",
  "group_info",
  "my_groups",
  "update_group",
  "add_members",
  "join",
  "leave",
  "remove_member",
  "set_role",
  "transfer_ownership",
  "dissolve_group",
  "members",
  "send",
  "history",
  "sync",
  "read",
  "start_face_to_face",
  "join_face_to_face",
  "confirm_face_to_face",
  "grab_red_packet",
  "red_packet",
  "wallet",
  "media_url",
] as const;

/** An op name, as in a request's `op` and its reply's `op`. */
export type Op = (typeof OPS)[number];

/** Every error code, in the order of the Rust `ErrorCode` enum; the wire names are stable. */
export const ERROR_CODES = [
  "malformed_frame",
  "unknown_op",
  "invalid_field",
  "unsupported_frame",
  "unauthenticated",
  "already_authenticated",
  "invalid_credentials",
  "invalid_token",
  "username_taken",
  "not_found",
  "forbidden",
  "group_full",
  "already_member",
  "owner_cannot_leave",
  "text_too_long",
  "unsupported_type",
  "too_far",
  "expired",
  "insufficient_funds",
  "media_too_large",
  "quota_exceeded",
  "kind_mismatch",
  "invalid_media",
  "not_supported",
  "too_many_connections",
  "rate_limited",
  "overloaded",
  "unavailable",
  "internal",
] as const;

/** Why a request failed, machine-readable: branch on this, never on `message`. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The reason texts of the node's WebSocket close frames (PROTOCOL.md §3), in Rust order. */
export const CLOSE_REASONS = [
  "going_away",
  "auth_timeout",
  "session_revoked",
  "session_expired",
  "slow_consumer",
  "heartbeat_timeout",
  "frame_too_large",
  "protocol_error",
] as const;

/** Why the node closed the connection, so a client knows whether to reconnect or log in. */
export type CloseReason = (typeof CLOSE_REASONS)[number];

/** The RFC 6455 status code the node sends with each close reason. */
export const CLOSE_STATUS_CODES: { readonly [R in CloseReason]: number } = {
  going_away: 1001,
  auth_timeout: 1008,
  session_revoked: 1008,
  session_expired: 1008,
  slow_consumer: 1008,
  heartbeat_timeout: 1001,
  frame_too_large: 1009,
  protocol_error: 1002,
};

// ---------------------------------------------------------------------------------------
// Small enums

/** Every message type, in the order of the Rust `MessageKind` enum. */
export const MESSAGE_TYPES = ["text", "image", "audio", "video", "file", "red_packet"] as const;

/** What a message carries; decides the shape of its `body`. */
export type MessageType = (typeof MESSAGE_TYPES)[number];

/** The message types that carry an uploaded media object (Rust `MessageKind::MEDIA`). */
export const MEDIA_KINDS = ["image", "audio", "video", "file"] as const;

/** The `kind` of an upload, and the type of the message that sends it. */
export type MediaKind = (typeof MEDIA_KINDS)[number];

/** Every role, in the order of the Rust `Role` enum. */
export const ROLES = ["owner", "admin", "member"] as const;

/** A member's role in a group; exactly one member is the owner. */
export type Role = (typeof ROLES)[number];

/** How a red packet splits its total, in the order of the Rust `RedPacketKind` enum. */
export const RED_PACKET_KINDS = ["lucky", "equal"] as const;

/** `lucky`: random shares; `equal`: equal shares, leftover cents to the first ones. */
export type RedPacketKind = (typeof RED_PACKET_KINDS)[number];

/** Why a wallet ledger entry exists, in the order of the Rust `LedgerKind` enum. */
export const LEDGER_KINDS = ["credit", "red_packet_send", "red_packet_grab", "red_packet_refund", "void"] as const;

/** The cause of a ledger entry; `void` marks a red packet never paid for (amount 0). */
export type LedgerKind = (typeof LEDGER_KINDS)[number];

/** Why a member is no longer in a group (Rust `LeaveReason`). */
export const LEAVE_REASONS = ["left", "removed"] as const;

/** `left` by themself, or `removed` by an owner or admin. */
export type LeaveReason = (typeof LEAVE_REASONS)[number];

/** The outcome for one user of `add_members` (Rust `AddStatus`). */
export const ADD_STATUSES = ["added", "already_member", "not_found", "group_full"] as const;

/** What `add_members` did for one user; each user gets its own, so one failure fails none. */
export type AddStatus = (typeof ADD_STATUSES)[number];

/** What a grab got (Rust `GrabStatus`). */
export const GRAB_STATUSES = ["grabbed", "already_grabbed", "empty", "expired"] as const;

/** `grabbed` and `already_grabbed` come with an `amount`; `empty` and `expired` with null. */
export type GrabStatus = (typeof GRAB_STATUSES)[number];

/** Where a red packet stands (Rust `RedPacketStatus`). */
export const RED_PACKET_STATUSES = ["open", "empty", "expired"] as const;

/** `open` while shares and time are left; `grabs` is listed once it is not. */
export type RedPacketStatus = (typeof RED_PACKET_STATUSES)[number];

// ---------------------------------------------------------------------------------------
// Requests: each op's fields, without `id` and `op`

/**
 * The fields of an op that has none. Not `Record<string, never>`: that index signature
 * would also forbid the `id` and `op` it is joined with in `ClientFrame`. An object
 * literal with a stray field still fails, by excess property checking.
 */
export type NoFields = Record<never, never>;

/** `register`: creates an account; does not authenticate the connection. */
export interface RegisterRequest {
  /** 3-32 of `a-z 0-9 _ . -`, unique. */
  username: string;
  /** 8-128 bytes; only its hash is stored. */
  password: string;
  /** Display name, 1-64 characters; the username when absent. */
  nickname?: string;
}

/** `login`: checks the password, opens a session, authenticates the connection. */
export interface LoginRequest {
  /** The login name. */
  username: string;
  /** The password. */
  password: string;
}

/** `auth`: authenticates the connection with a token from `login`. */
export interface AuthRequest {
  /** The session token. */
  token: string;
}

/** `logout`: revokes this connection's session token. */
export type LogoutRequest = NoFields;

/** `ping`: liveness check, works before authentication. */
export type PingRequest = NoFields;

/** `profile`: a user's public profile. */
export interface ProfileRequest {
  /** Whose profile; the caller's own when absent. */
  user?: UserId;
}

/** `update_profile`: absent fields stay as they are. */
export interface UpdateProfileRequest {
  /** 1-64 characters, no control characters, not blank. */
  nickname?: string;
  /** Empty (clears it), or an http(s) URL of at most 512 bytes. */
  avatar_url?: string;
}

/** `create_group`: the caller becomes owner and only member. */
export interface CreateGroupRequest {
  /** 1-64 characters, no control characters, not blank. */
  name: string;
  /** Whether anyone may `join` by id; false when absent. */
  open?: boolean;
  /** A cap from 2 up to the node's; the node's cap when absent. */
  max_members?: number;
  /** Days messages are kept, 1-36500, or 0 for forever; forever when absent. */
  retention_days?: number;
}

/** `group_info`. */
export interface GroupInfoRequest {
  /** The group. */
  group: GroupId;
}

/** `my_groups`: the caller's groups with unread counts. */
export type MyGroupsRequest = NoFields;

/** `update_group` (owner or admin): at least one of `name`, `open` and `retention_days`. */
export interface UpdateGroupRequest {
  /** The group. */
  group: GroupId;
  /** New name, 1-64 characters. */
  name?: string;
  /** New openness. */
  open?: boolean;
  /** New retention in days, 1-36500; 0 keeps messages forever again. */
  retention_days?: number;
}

/** `add_members` (owner or admin). */
export interface AddMembersRequest {
  /** The group. */
  group: GroupId;
  /** 1-100 users, added in list order; duplicates count once. */
  users: UserId[];
}

/** `join`: joins an open group. */
export interface JoinRequest {
  /** The group. */
  group: GroupId;
}

/** `leave`: the owner cannot leave (`owner_cannot_leave`). */
export interface LeaveRequest {
  /** The group. */
  group: GroupId;
}

/** `remove_member`: owner removes anyone but themself, admins remove plain members. */
export interface RemoveMemberRequest {
  /** The group. */
  group: GroupId;
  /** The member to remove. */
  user: UserId;
}

/** `set_role` (owner only). */
export interface SetRoleRequest {
  /** The group. */
  group: GroupId;
  /** The member. */
  user: UserId;
  /** `owner` is refused (`invalid_field`): ownership moves only by `transfer_ownership`. */
  role: Exclude<Role, "owner">;
}

/** `transfer_ownership` (owner only): the old owner becomes an admin. */
export interface TransferOwnershipRequest {
  /** The group. */
  group: GroupId;
  /** The member who becomes owner. */
  user: UserId;
}

/** `dissolve_group` (owner only): the group is gone for everyone. */
export interface DissolveGroupRequest {
  /** The group. */
  group: GroupId;
}

/** `members`: one page of members, in ascending user id. */
export interface MembersRequest {
  /** The group. */
  group: GroupId;
  /** Start after this user: the previous page's `next`. */
  after?: UserId;
  /** 1-500; 100 when absent. */
  limit?: number;
}

/** The body of a `send` of type `red_packet`; the node refuses unknown fields in it. */
export interface RedPacketBody {
  /** Cents taken from the sender's wallet, 1 to 1,000,000. */
  total: number;
  /** Shares: 1 to the group's member count, and at most `total`. */
  count: number;
  /** How the total is split. */
  kind: RedPacketKind;
  /** Up to 64 characters; empty when absent. */
  greeting?: string;
}

/** The body of a `send` of a media type; the node refuses unknown fields in it. */
export interface MediaBody {
  /** An object the sender uploaded, of the message's type. */
  media: MediaId;
}

/** What a `send`'s `body` is, per message type. */
export interface SendBodies {
  /** A non-empty string of at most 4096 UTF-8 bytes. */
  text: string;
  /** A media object's id. */
  image: MediaBody;
  /** A media object's id. */
  audio: MediaBody;
  /** A media object's id. */
  video: MediaBody;
  /** A media object's id. */
  file: MediaBody;
  /** The packet to pay for and post. */
  red_packet: RedPacketBody;
}

/** `send`: a union on `type`, so the compiler pairs each type with its body. */
export type SendRequest = {
  [T in MessageType]: {
    /** The group. */
    group: GroupId;
    /** 1-64 bytes, unique per (group, sender): a resend with the same id is stored once. */
    client_msg_id: string;
    /** The message type. */
    type: T;
    /** The body for that type. */
    body: SendBodies[T];
  };
}[MessageType];

/** `history`: at most one of `before` and `after`; neither means the newest page. */
export interface HistoryRequest {
  /** The group. */
  group: GroupId;
  /** Messages with seq < before (the newest of them). */
  before?: Seq;
  /** Messages with seq > after (the oldest of them). */
  after?: Seq;
  /** 1-100; 50 when absent. */
  limit?: number;
}

/** One group a syncing client holds messages for, and the last seq it holds. */
export interface SyncCursor {
  /** The group. */
  group: GroupId;
  /** The highest seq the client holds. */
  after: Seq;
}

/** `sync`: the state of every group, plus what was missed in the listed ones. */
export interface SyncRequest {
  /** Groups the client holds messages for; none when absent. */
  groups?: SyncCursor[];
  /** Messages per listed group, 0-100; 50 when absent. */
  limit?: number;
}

/** `read`: moves the caller's read mark forward (never back, never past the last seq). */
export interface ReadRequest {
  /** The group. */
  group: GroupId;
  /** Everything up to this seq has been read. */
  seq: Seq;
}

/** `start_face_to_face`: where the caller stands, WGS84 degrees. */
export interface StartFaceToFaceRequest {
  /** Latitude, -90 to 90. */
  lat: number;
  /** Longitude, -180 to 180. */
  lon: number;
}

/** `join_face_to_face`: the session with this code started within 50 m. */
export interface JoinFaceToFaceRequest {
  /** Exactly 4 digits, as a string ("0427"). */
  code: string;
  /** Latitude, -90 to 90. */
  lat: number;
  /** Longitude, -180 to 180. */
  lon: number;
}

/** `confirm_face_to_face`: turns the session into a group. */
export interface ConfirmFaceToFaceRequest {
  /** The session's code. */
  code: string;
  /** The session. */
  session: FaceSessionId;
}

/** `grab_red_packet`: takes the next share; a retry gets the same share back. */
export interface GrabRedPacketRequest {
  /** The group the packet was sent to. */
  group: GroupId;
  /** The packet, from its message's body. */
  packet: PacketId;
}

/** `red_packet`: how a packet stands. */
export interface RedPacketRequest {
  /** The group the packet was sent to. */
  group: GroupId;
  /** The packet. */
  packet: PacketId;
}

/** `wallet`: the caller's balance and ledger. */
export type WalletRequest = NoFields;

/** `media_url`: a short-lived URL that serves a media object without an auth header. */
export interface MediaUrlRequest {
  /** The media. */
  media: MediaId;
  /** The URL of its JPEG thumbnail instead (`not_found` if it has none). */
  thumbnail?: boolean;
}

/** Each op's fields, so a request function can be typed by its op. */
export interface Requests {
  register: RegisterRequest;
  login: LoginRequest;
  auth: AuthRequest;
  logout: LogoutRequest;
  ping: PingRequest;
  profile: ProfileRequest;
  update_profile: UpdateProfileRequest;
  create_group: CreateGroupRequest;
  group_info: GroupInfoRequest;
  my_groups: MyGroupsRequest;
  update_group: UpdateGroupRequest;
  add_members: AddMembersRequest;
  join: JoinRequest;
  leave: LeaveRequest;
  remove_member: RemoveMemberRequest;
  set_role: SetRoleRequest;
  transfer_ownership: TransferOwnershipRequest;
  dissolve_group: DissolveGroupRequest;
  members: MembersRequest;
  send: SendRequest;
  history: HistoryRequest;
  sync: SyncRequest;
  read: ReadRequest;
  start_face_to_face: StartFaceToFaceRequest;
  join_face_to_face: JoinFaceToFaceRequest;
  confirm_face_to_face: ConfirmFaceToFaceRequest;
  grab_red_packet: GrabRedPacketRequest;
  red_packet: RedPacketRequest;
  wallet: WalletRequest;
  media_url: MediaUrlRequest;
}

/** One client frame: a JSON object with an optional `id` (echoed in the reply), `op`, and the op's fields. */
export type ClientFrame = { [K in Op]: { id?: number; op: K } & Requests[K] }[Op];

// ---------------------------------------------------------------------------------------
// Results and views

/** A user's public profile: `profile` and `update_profile` results, and in a session. */
export interface Profile {
  /** The user. */
  user: UserId;
  /** Their login name. */
  username: string;
  /** Their display name. */
  nickname: string;
  /** Their avatar URL, or empty. */
  avatar_url: string;
}

/** `register` result. */
export interface RegisterResult {
  /** The new user's id. */
  user: UserId;
}

/** `login` and `auth` result: who the caller is and where they stand in each group. */
export interface SessionResult {
  /** The session token; only `login` sends it (absent, not null, from `auth`). Keep it secret. */
  token?: string;
  /** The caller's profile. */
  profile: Profile;
  /** The caller's groups in ascending id, with unread counts. */
  groups: GroupSummary[];
}

/** `ping` result. */
export interface PongResult {
  /** Server time, ms since the Unix epoch. */
  ts: number;
}

/** The result of ops that only succeed or fail: always `{}`. */
export type Done = Record<string, never>;

/** A group as its members see it: the result of `create_group`, `group_info`, `join`, `update_group`. */
export interface GroupInfo {
  /** The group. */
  group: GroupId;
  /** Its name. */
  name: string;
  /** Its owner. */
  owner: UserId;
  /** Whether anyone may `join`. */
  open: boolean;
  /** Members now. */
  member_count: number;
  /** Its member cap. */
  max_members: number;
  /** Its newest message's seq (0 when empty). */
  last_seq: Seq;
  /**
   * How many days the node keeps its messages; older ones are deleted for everyone. 0 keeps
   * them forever. Shown so members know their history has an end before it reaches it.
   */
  retention_days: number;
}

/** One of the caller's groups, with where the caller stands in it (for lists and badges). */
export interface GroupSummary {
  /** The group. */
  group: GroupId;
  /** Its name. */
  name: string;
  /** The caller's role. */
  role: Role;
  /** Its newest message's seq. */
  last_seq: Seq;
  /** The caller's read mark. */
  read_seq: Seq;
  /** `last_seq - read_seq`, capped at `UNREAD_CAP`. */
  unread: number;
}

/** `my_groups` result. */
export interface MyGroupsResult {
  /** The caller's groups, ascending id. */
  groups: GroupSummary[];
}

/** One line of an `add_members` result. */
export interface AddMemberOutcome {
  /** The user. */
  user: UserId;
  /** What happened to them. */
  status: AddStatus;
}

/** `add_members` result. */
export interface AddMembersResult {
  /** One line per requested user, in request order. */
  results: AddMemberOutcome[];
  /** Members after the change. */
  member_count: number;
}

/** `leave` and `remove_member` result. */
export interface MemberCountResult {
  /** Members after the change. */
  member_count: number;
}

/** One member in a `members` page. */
export interface MemberView {
  /** The member. */
  user: UserId;
  /** Their role. */
  role: Role;
}

/** `members` result. */
export interface MembersPage {
  /** Members in ascending user id. */
  members: MemberView[];
  /** Pass as `after` for the next page; absent (not null) on the last page. */
  next?: UserId;
}

/** `send` result: the message is durable. */
export interface SendAck {
  /** The group. */
  group: GroupId;
  /** The message's seq. */
  seq: Seq;
  /** Server time it was accepted, ms since the Unix epoch. */
  ts: number;
  /** True when this `client_msg_id` was stored before: nothing new was stored or delivered. */
  duplicate: boolean;
}

/** A width and a height in pixels. */
export interface Size {
  /** Pixels across. */
  width: number;
  /** Pixels down. */
  height: number;
}

/** An uploaded media object: what `POST /media` (and `.../complete`) answers, and the body of a media message. */
export interface MediaView {
  /** Its id, to send it with. */
  media: MediaId;
  /** What it may be sent as. */
  kind: MediaKind;
  /** Its MIME type, judged from its bytes. */
  mime: string;
  /** Bytes. */
  size: number;
  /** SHA-256 of its bytes, lowercase hex. */
  sha256: string;
  /** Pixels across, for images; null otherwise. */
  width: number | null;
  /** Pixels down, for images; null otherwise. */
  height: number | null;
  /** The JPEG thumbnail's size, for images the node decoded; null otherwise. */
  thumbnail: Size | null;
}

/** What members see of a red packet in its `message` event's body. */
export interface RedPacketMessageBody {
  /** The packet, to grab it with. */
  packet: PacketId;
  /** Cents. */
  total: number;
  /** Shares. */
  count: number;
  /** How it splits. */
  kind: RedPacketKind;
  /** The sender's words; empty when none (always present). */
  greeting: string;
}

/** What a message's `body` is, per message type, as members receive it. */
export interface MessageBodies {
  /** The text as sent. */
  text: string;
  /** The media object's metadata. */
  image: MediaView;
  /** The media object's metadata. */
  audio: MediaView;
  /** The media object's metadata. */
  video: MediaView;
  /** The media object's metadata. */
  file: MediaView;
  /** The packet's id and terms. */
  red_packet: RedPacketMessageBody;
}

/** A message of one type (Rust `MessageView`); `Message` is the union of them. */
export interface MessageOf<T extends MessageType> {
  /** The group. */
  group: GroupId;
  /** Its position in the group's log. */
  seq: Seq;
  /** Who sent it. */
  sender: UserId;
  /** The sender's id for it. */
  client_msg_id: string;
  /** Its type, which decides `body`. */
  type: T;
  /** The body for that type. */
  body: MessageBodies[T];
  /** Server time it was accepted, ms since the Unix epoch. */
  ts: number;
}

/** A message as clients see it (in `message` events, `history`, `sync`); narrow it on `type`. */
export type Message = { [T in MessageType]: MessageOf<T> }[MessageType];

/** `history` result. */
export interface HistoryPage {
  /** The group. */
  group: GroupId;
  /** Messages in ascending seq. */
  messages: Message[];
  /** Whether more lie in the direction asked. */
  has_more: boolean;
  /** The group's newest seq when the page was read. */
  last_seq: Seq;
  /**
   * The lowest seq the group still keeps (1 if retention never deleted any). Every seq below
   * it is deleted for good, not missing: a client that holds less than `first_seq - 1` moves
   * its cursor up to it rather than ask for those seqs again.
   */
  first_seq: Seq;
}

/** One group in a `sync` result: its summary (flattened in) plus the messages missed. */
export interface SyncGroup extends GroupSummary {
  /** Messages after the client's cursor; empty for groups the client did not list. */
  messages: Message[];
  /** More follow: fetch them with `history` `after`. */
  has_more: boolean;
  /**
   * The lowest seq the group still keeps, as in {@link HistoryPage}; present only for a
   * listed group whose `after` is below its `last_seq`. `messages` then start at
   * `max(after + 1, first_seq)`: the seqs skipped were deleted by retention, not missed.
   */
  first_seq?: Seq;
}

/** `sync` result. */
export interface SyncResult {
  /** Every group the caller is a member of, ascending id. */
  groups: SyncGroup[];
  /** Listed groups the caller is no longer in (or that were dissolved): drop them. */
  gone: GroupId[];
}

/** `read` result, and the content of the `read_mark` event. */
export interface ReadAck {
  /** The group. */
  group: GroupId;
  /** The read mark now. */
  read_seq: Seq;
  /** Unread after the move, capped. */
  unread: number;
}

/** Someone in a face-to-face session. */
export interface FaceToFaceParticipant {
  /** The user. */
  user: UserId;
  /** Their display name. */
  nickname: string;
  /** Their avatar URL, or empty. */
  avatar_url: string;
}

/** `start_face_to_face`, `join_face_to_face` and `confirm_face_to_face` result: the session. */
export interface FaceToFaceView {
  /** The session. */
  session: FaceSessionId;
  /** Exactly 4 digits. */
  code: string;
  /** When the session and its code end, ms since the Unix epoch. */
  expires_at: number;
  /** Everyone in it, in the order they came. */
  participants: FaceToFaceParticipant[];
  /** The group it became; null until someone confirmed. */
  group: GroupInfo | null;
}

/** `grab_red_packet` result. */
export interface GrabResult {
  /** The packet. */
  packet: PacketId;
  /** What happened. */
  status: GrabStatus;
  /** The caller's share in cents; null for `empty` and `expired`. */
  amount: number | null;
}

/** One grab of a finished red packet. */
export interface GrabView {
  /** Who. */
  user: UserId;
  /** Cents. */
  amount: number;
  /** When, ms since the Unix epoch. */
  ts: number;
  /** The largest share (the earliest of equal ones); exactly one grab has it. */
  luckiest: boolean;
}

/** `red_packet` result: how a packet stands. */
export interface RedPacketView {
  /** The packet. */
  packet: PacketId;
  /** Its group. */
  group: GroupId;
  /** Who sent it. */
  sender: UserId;
  /** Cents. */
  total: number;
  /** Shares. */
  count: number;
  /** How it splits. */
  kind: RedPacketKind;
  /** The sender's words (empty when none). */
  greeting: string;
  /** When it was sent, ms since the Unix epoch. */
  created_at: number;
  /** When nobody can grab any more. */
  expires_at: number;
  /** Where it stands. */
  status: RedPacketStatus;
  /** Shares taken. */
  grabbed_count: number;
  /** Cents taken. */
  grabbed_amount: number;
  /** The caller's share; null if they have none. */
  your_amount: number | null;
  /** Who got how much, in grab order, once `empty` or `expired`; null before. */
  grabs: GrabView[] | null;
}

/** One wallet ledger entry. */
export interface LedgerView {
  /** The entry's id, naming what caused it (`credit:KEY`, `red_packet:PACKET`, ...). */
  id: string;
  /** Signed cents. */
  amount: number;
  /** Why. */
  kind: LedgerKind;
  /** The red packet it belongs to; null for others. */
  packet: PacketId | null;
  /** When, ms since the Unix epoch. */
  ts: number;
}

/** `wallet` result. */
export interface WalletView {
  /** Cents; the ledger always sums to it. */
  balance: number;
  /** Entries in ascending `id`, the first 1000. */
  entries: LedgerView[];
}

/** `media_url` result. */
export interface MediaUrl {
  /** The media. */
  media: MediaId;
  /** A path on the node's HTTP port (`/media/ID?exp=...&sig=...`), usable in `<img src>` until `expires_at`. */
  url: string;
  /** ms since the Unix epoch. */
  expires_at: number;
}

/** Each op's result, so a reply can be typed by its op. */
export interface Results {
  register: RegisterResult;
  /** `login` always sends the token. */
  login: SessionResult & { token: string };
  auth: SessionResult;
  logout: Done;
  ping: PongResult;
  profile: Profile;
  update_profile: Profile;
  create_group: GroupInfo;
  group_info: GroupInfo;
  my_groups: MyGroupsResult;
  update_group: GroupInfo;
  add_members: AddMembersResult;
  join: GroupInfo;
  leave: MemberCountResult;
  remove_member: MemberCountResult;
  set_role: Done;
  transfer_ownership: Done;
  dissolve_group: Done;
  members: MembersPage;
  send: SendAck;
  history: HistoryPage;
  sync: SyncResult;
  read: ReadAck;
  start_face_to_face: FaceToFaceView;
  join_face_to_face: FaceToFaceView;
  confirm_face_to_face: FaceToFaceView;
  grab_red_packet: GrabResult;
  red_packet: RedPacketView;
  wallet: WalletView;
  media_url: MediaUrl;
}

// ---------------------------------------------------------------------------------------
// Events: what the node sends, always inside an array (one frame)

/** A reply to a request, narrowed by `op` to that op's result. */
export type ReplyEvent = { [K in Op]: { event: "reply"; id: number | null; op: K; result: Results[K] } }[Op];

/** An error answering a request; `id` is null when the frame's envelope could not be read. */
export interface ErrorEvent {
  /** Always "error". */
  event: "error";
  /** The request's id, or null. */
  id: number | null;
  /** The stable code. */
  code: ErrorCode;
  /** For humans; may change. */
  message: string;
  /** With `rate_limited` and `overloaded`: milliseconds to wait before trying again. */
  retry_after_ms?: number;
}

/** A message was stored in one of the receiver's groups (theirs too). */
export type MessageEvent = { event: "message" } & Message;

/** Somebody joined or was added (also sent to the newcomer). */
export interface MemberJoinedEvent {
  /** Always "member_joined". */
  event: "member_joined";
  /** The group. */
  group: GroupId;
  /** Who joined. */
  user: UserId;
  /** Their role. */
  role: Role;
  /** Members after the change. */
  member_count: number;
}

/** Somebody left or was removed; if `user` is the receiver, nothing more comes from the group. */
export interface MemberLeftEvent {
  /** Always "member_left". */
  event: "member_left";
  /** The group. */
  group: GroupId;
  /** Who left. */
  user: UserId;
  /** Why. */
  reason: LeaveReason;
  /** Members after the change. */
  member_count: number;
}

/** A member's role changed (including by ownership transfer). */
export interface RoleChangedEvent {
  /** Always "role_changed". */
  event: "role_changed";
  /** The group. */
  group: GroupId;
  /** Whose role. */
  user: UserId;
  /** The new role. */
  role: Role;
}

/** The group's name, openness, retention or owner changed: the whole group info, flattened in. */
export interface GroupUpdatedEvent extends GroupInfo {
  /** Always "group_updated". */
  event: "group_updated";
}

/** The owner dissolved the group; it is gone for everyone. */
export interface GroupDissolvedEvent {
  /** Always "group_dissolved". */
  event: "group_dissolved";
  /** The group. */
  group: GroupId;
}

/** Another of the receiver's connections called `read`, so badges agree across devices. */
export interface ReadMarkEvent extends ReadAck {
  /** Always "read_mark". */
  event: "read_mark";
}

/** People joined a face-to-face session the receiver is in: the whole list. */
export interface FaceToFaceParticipantsEvent {
  /** Always "face_to_face_participants". */
  event: "face_to_face_participants";
  /** The session. */
  session: FaceSessionId;
  /** Its code. */
  code: string;
  /** Everyone in it, in the order they came. */
  participants: FaceToFaceParticipant[];
}

/** A face-to-face session the receiver is in became a group, with the receiver in it. */
export interface FaceToFaceGroupEvent {
  /** Always "face_to_face_group". */
  event: "face_to_face_group";
  /** The session. */
  session: FaceSessionId;
  /** Its code. */
  code: string;
  /** The group. */
  group: GroupInfo;
}

/** Every pushed event's name, in the order of the Rust `Event` enum. */
export const PUSH_EVENTS = [
  "message",
  "member_joined",
  "member_left",
  "role_changed",
  "group_updated",
  "group_dissolved",
  "read_mark",
  "face_to_face_participants",
  "face_to_face_group",
] as const;

/** A pushed event's name. */
export type PushEventName = (typeof PUSH_EVENTS)[number];

/** An event the node pushes by itself, not answering a request. */
export type PushEvent =
  | MessageEvent
  | MemberJoinedEvent
  | MemberLeftEvent
  | RoleChangedEvent
  | GroupUpdatedEvent
  | GroupDissolvedEvent
  | ReadMarkEvent
  | FaceToFaceParticipantsEvent
  | FaceToFaceGroupEvent;

type SameNames<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type AssertTrue<T extends true> = T;

/**
 * Fails to compile when `PUSH_EVENTS` and `PushEvent` name different events: the unit test
 * compares `PUSH_EVENTS` with the Rust enum and the doc, and this ties the types to it.
 */
export type PushEventsMatchPushEventNames = AssertTrue<SameNames<PushEvent["event"], PushEventName>>;

/** Any event in a node frame; narrow it on `event` (then on `op` or `type`). */
export type ServerEvent = ReplyEvent | ErrorEvent | PushEvent;

/** One frame from the node: one or more events, to be handled in array order. */
export type ServerFrame = ServerEvent[];

// ---------------------------------------------------------------------------------------
// HTTP media uploads (PROTOCOL.md §7a)

/** `POST /media/presign` answer (200): where to `PUT` the bytes, then `POST /media/ID/complete`. */
export interface PresignResult {
  /** The id the media gets once completed. */
  media: MediaId;
  /** The HTTP method to send the bytes with ("PUT"). */
  method: string;
  /** The bucket URL, good until `expires_at`. */
  url: string;
  /** Headers the upload must carry, name to value. */
  headers: Record<string, string>;
  /** ms since the Unix epoch (15 minutes after the presign). */
  expires_at: number;
}

/** The body of every HTTP error the node's media endpoints answer. */
export interface HttpErrorBody {
  /** The stable code (section 7 of PROTOCOL.md). */
  code: ErrorCode;
  /** For humans; may change. */
  message: string;
}
