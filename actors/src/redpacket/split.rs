//! How a red packet's total is split into shares: the pure part of red packets.
//!
//! All shares are drawn when the packet is sent and stored with it, so a grab only takes the
//! next stored share: what a grab returns never depends on timing, and the shares always sum
//! to the total, to the cent.

use rand::{Rng, RngExt};
use schema::records::RedPacketKind;

/// Why a packet cannot be split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// A packet has at least one share.
    #[error("count must be at least 1")]
    NoShares,
    /// Every share is at least one cent.
    #[error("the total must be at least one cent per share")]
    TooSmall,
}

/// Draws `count` shares of `total` cents. Equal shares: when the total does not divide
/// evenly, the first `total % count` shares get one cent more, so no two differ by more
/// than a cent. Lucky shares follow the double-mean method: with
/// `r` cents and `k` shares left, a share is drawn uniformly from `1..=min(2r/k, r-(k-1))`
/// and the last share takes the rest; every share is at least one cent.
pub fn draw_shares(total: u64, count: u32, kind: RedPacketKind, rng: &mut impl Rng) -> Result<Vec<u64>, SplitError> {
    if count == 0 {
        return Err(SplitError::NoShares);
    }
    let count64 = u64::from(count);
    if total < count64 {
        return Err(SplitError::TooSmall);
    }
    let shares = match kind {
        RedPacketKind::Equal => {
            let (base, extra) = (total / count64, total % count64);
            (0..count64).map(|i| base + u64::from(i < extra)).collect()
        }
        RedPacketKind::Lucky => {
            let mut left = total;
            let mut shares = Vec::with_capacity(count as usize);
            for k in (2..=count64).rev() {
                let most = (left.saturating_mul(2) / k).min(left - (k - 1)).max(1);
                let share = rng.random_range(1..=most);
                shares.push(share);
                left -= share;
            }
            shares.push(left);
            shares
        }
    };
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_packets_are_refused() {
        let mut rng = rand::rng();
        assert_eq!(draw_shares(100, 0, RedPacketKind::Lucky, &mut rng), Err(SplitError::NoShares));
        assert_eq!(draw_shares(4, 5, RedPacketKind::Equal, &mut rng), Err(SplitError::TooSmall));
        assert_eq!(draw_shares(5, 5, RedPacketKind::Lucky, &mut rng).unwrap(), vec![1; 5], "one cent each");
    }

    #[test]
    fn equal_shares_differ_by_a_cent_at_most() {
        let shares = draw_shares(1000, 3, RedPacketKind::Equal, &mut rand::rng()).unwrap();
        assert_eq!(shares, vec![334, 333, 333]);
    }

    proptest! {
        #[test]
        fn shares_sum_to_the_total_and_each_is_at_least_a_cent(
            total in 1u64..10_000_000,
            count in 1u32..500,
            lucky in any::<bool>(),
        ) {
            prop_assume!(total >= u64::from(count));
            let split = if lucky { RedPacketKind::Lucky } else { RedPacketKind::Equal };
            let shares = draw_shares(total, count, split, &mut rand::rng()).unwrap();
            prop_assert_eq!(shares.len(), count as usize);
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
            prop_assert!(shares.iter().all(|s| *s >= 1));
            if lucky {
                // Each drawn share respects the double-mean bound at its turn.
                let mut left = total;
                for (i, share) in shares.iter().enumerate().take(count as usize - 1) {
                    let k = u64::from(count) - i as u64;
                    prop_assert!(*share <= (2 * left / k).min(left - (k - 1)).max(1));
                    left -= share;
                }
            }
        }
    }
}
