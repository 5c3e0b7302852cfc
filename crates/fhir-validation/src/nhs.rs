//! NHS number rules: 10 digits with a Modulus 11 check digit (NHS Data Dictionary).

/// The identifier system of NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Whether `s` is exactly 10 ASCII digits passing the Modulus 11 check
/// (weights 10..2; check 11 → 0; check 10 → never valid).
pub fn nhs_number_valid(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() != 10 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let digits: Vec<u32> = bytes.iter().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = digits
        .iter()
        .take(9)
        .zip((2..=10u32).rev())
        .map(|(d, w)| d * w)
        .sum();
    let last = digits.last().copied().unwrap_or(99);
    match 11 - sum % 11 {
        11 => last == 0,
        10 => false,
        c => last == c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_11() {
        assert!(nhs_number_valid("9000000009"));
        assert!(nhs_number_valid("9434765919"));
        assert!(nhs_number_valid("9912003888"));
        assert!(nhs_number_valid("0000000000"));
        assert!(!nhs_number_valid("9912003890"));
        assert!(!nhs_number_valid("9434765918"));
        assert!(!nhs_number_valid("943476591"));
        assert!(!nhs_number_valid("94347659190"));
        assert!(!nhs_number_valid("943 476 5919"));
        assert!(!nhs_number_valid("943476591a"));
        assert!(!nhs_number_valid(""));
        // check digit 10 → never valid: 123456789? sum = 1*10+2*9+...+9*2 = 210, 210 % 11 = 1, check 10
        assert!(!nhs_number_valid("1234567890"));
        assert!(!nhs_number_valid("１２３４５６７８９０"));
    }
}
