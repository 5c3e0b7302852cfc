//! Base64 without a dependency: the standard alphabet with padding (FHIR
//! `base64Binary`, e.g. `Binary.data`) and the unpadded URL-safe alphabet
//! (opaque paging cursors).

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// `+/` with `=` padding. Decoding also accepts `-_` and ignores padding
    /// and line breaks, as FHIR senders vary.
    Standard,
    /// `-_` without padding; decoding accepts nothing else.
    UrlSafe,
}

pub fn encode(data: &[u8], alphabet: Alphabet) -> String {
    let table = match alphabet {
        Alphabet::Standard => STD,
        Alphabet::UrlSafe => URL,
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if alphabet == Alphabet::Standard {
                out.push('=');
            }
        }
    }
    out
}

pub fn decode(s: &str, alphabet: Alphabet) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match (alphabet, c) {
            (_, b'A'..=b'Z') => c - b'A',
            (_, b'a'..=b'z') => c - b'a' + 26,
            (_, b'0'..=b'9') => c - b'0' + 52,
            (_, b'-') | (Alphabet::Standard, b'+') => 62,
            (_, b'_') | (Alphabet::Standard, b'/') => 63,
            (Alphabet::Standard, b'=' | b'\n' | b'\r' | b' ') => continue,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_both_alphabets() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "[{\"op\":\"remove\",\"path\":\"/x\"}]",
            "\u{ff}\u{fe}>?",
        ] {
            for a in [Alphabet::Standard, Alphabet::UrlSafe] {
                assert_eq!(decode(&encode(s.as_bytes(), a), a).unwrap(), s.as_bytes());
            }
        }
        assert_eq!(encode(b"a", Alphabet::Standard), "YQ==");
        assert_eq!(encode(b"a", Alphabet::UrlSafe), "YQ");
        assert_eq!(decode("YQ==", Alphabet::UrlSafe), None);
        assert_eq!(decode("a+b", Alphabet::UrlSafe), None);
        assert_eq!(decode("not base64!", Alphabet::Standard), None);
    }
}
