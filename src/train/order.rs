//! Deterministic data order: each epoch is a seeded permutation of the example indices, so the
//! data position of a run is just a counter and resuming replays the same order.

/// Example indices of micro-batch `index` (0-based, counted across epochs).
pub fn micro_batch(
    seed: u64,
    num_examples: usize,
    micro_batch_size: usize,
    index: usize,
) -> Vec<usize> {
    let start = index * micro_batch_size;
    (start..start + micro_batch_size)
        .map(|position| {
            let epoch = position / num_examples;
            permutation(seed, epoch as u64, num_examples)[position % num_examples]
        })
        .collect()
}

/// The permutation of `0..n` used in `epoch` (Fisher–Yates with SplitMix64).
pub fn permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut state = seed ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// One SplitMix64 step: a small, platform-independent generator.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_and_differ() {
        let a = permutation(7, 0, 10);
        let b = permutation(7, 1, 10);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, permutation(7, 0, 10), "same seed and epoch, same order");
    }

    #[test]
    fn micro_batches_walk_across_epochs() {
        let first_epoch = permutation(3, 0, 5);
        let second_epoch = permutation(3, 1, 5);
        assert_eq!(micro_batch(3, 5, 2, 0), first_epoch[0..2].to_vec());
        assert_eq!(
            micro_batch(3, 5, 2, 2),
            vec![first_epoch[4], second_epoch[0]]
        );
    }
}
