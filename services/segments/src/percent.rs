//! Percentage assignment, as Unleash does it: a user is in a `percent` segment when
//! `murmur3_32("{slug}:{userId}", seed 0) % 100 + 1 <= percent`. The bucket depends only on the
//! slug and the user id, so the same share of all users, present and future, is in, and a
//! user's answer never changes while the percent stays.

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut hash = seed;
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        hash ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        hash = hash.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let k = tail.iter().enumerate().fold(0u32, |k, (i, byte)| k | (u32::from(*byte) << (8 * i)));
        hash ^= k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    // The length is mixed in modulo 2^32, as the reference implementation does.
    hash ^= data.len() as u32;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

/// The user's bucket in a segment, 1..=100.
pub fn bucket(slug: &str, user_id: &str) -> u32 {
    let mut key = String::with_capacity(slug.len() + 1 + user_id.len());
    key.push_str(slug);
    key.push(':');
    key.push_str(user_id);
    murmur3_32(key.as_bytes(), 0) % 100 + 1
}

/// Whether `user_id` falls in the `percent` share of the segment `slug`.
pub fn in_percentage(slug: &str, user_id: &str, percent: u8) -> bool {
    percent > 0 && bucket(slug, user_id) <= u32::from(percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello world", 0), 2_911_983_372);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0), 0x2e4f_f723);
    }

    /// The vectors Unleash's Node, Java and Go clients all check ("normalized values are the
    /// same across node, java, and go clients"): normalizedValue(id, groupId) hashes
    /// "{groupId}:{id}".
    #[test]
    fn unleash_normalized_value_vectors() {
        assert_eq!(bucket("gr1", "123"), 73);
        assert_eq!(bucket("groupX", "999"), 25);
    }

    #[test]
    fn zero_percent_is_nobody_and_hundred_is_everybody() {
        for user in 0..1000 {
            let user = user.to_string();
            assert!(!in_percentage("S", &user, 0));
            assert!(in_percentage("S", &user, 100));
        }
    }
}
