//! Conversions from stored records to what clients see: the one place where internal data
//! becomes wire data.

use schema::Seq;
use schema::frames::server::{GroupInfo, MediaView, MessageView, Profile, Size};
use schema::records::{GroupRecord, MediaRecord, MessageRecord, UserRecord};
use serde_json::value::RawValue;

/// A stored message as clients see it.
pub fn message_view(record: &MessageRecord) -> MessageView {
    // Bodies are stored as the JSON text the node produced, so this parse only re-checks it;
    // a body that fails it (a damaged store) is shown as null rather than dropped.
    let body = RawValue::from_string(record.body.clone()).unwrap_or_default();
    MessageView {
        group: record.group,
        seq: record.seq,
        sender: record.sender,
        client_msg_id: record.client_msg_id.clone(),
        kind: record.kind,
        body,
        ts: record.ts,
    }
}

/// A group as its members see it.
pub fn group_info(record: &GroupRecord, last_seq: Seq, retention_days: u32) -> GroupInfo {
    GroupInfo {
        group: record.id,
        name: record.name.clone(),
        owner: record.owner,
        open: record.open,
        member_count: record.member_count,
        max_members: record.max_members,
        last_seq,
        retention_days,
    }
}

/// A user's public profile.
pub fn profile(record: &UserRecord) -> Profile {
    Profile {
        user: record.id,
        username: record.username.clone(),
        nickname: record.nickname.clone(),
        avatar_url: record.avatar_url.clone(),
    }
}

/// A media object's metadata as clients see it (in `POST /media` answers and in media
/// messages).
pub fn media(record: &MediaRecord) -> MediaView {
    MediaView {
        media: record.id,
        kind: record.kind,
        mime: record.mime.clone(),
        size: record.size,
        sha256: record.sha256.clone(),
        width: record.dimensions.map(|d| d.0),
        height: record.dimensions.map(|d| d.1),
        thumbnail: record.thumbnail.map(|(width, height)| Size { width, height }),
    }
}
