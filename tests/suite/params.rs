//! Quantizer parameters: clear errors for bad bit widths and exponent ranges, in code and in
//! configs read with serde.

use burn_qnn::quant::{Bits, Pow2Range, QuantError, Quantizer};

#[test]
fn bit_widths_one_to_eight_are_accepted() {
    for k in 1..=8 {
        let bits = Bits::new(k).unwrap();
        assert_eq!(bits.get(), k);
        assert_eq!(bits.levels(), 1 << k);
    }
}

#[test]
fn bit_widths_outside_one_to_eight_are_refused() {
    for k in [0, 9, 16, 32, u32::MAX] {
        let err = Bits::new(k).unwrap_err();
        assert_eq!(err, QuantError::BitWidth(k));
        assert_eq!(
            err.to_string(),
            format!("quantizer bit width must be between 1 and 8, got {k}")
        );
    }
}

#[test]
fn pow2_ranges_are_checked() {
    assert!(Pow2Range::new(-8, 8).is_ok());
    assert_eq!(
        Pow2Range::new(3, 2),
        Err(QuantError::EmptyPow2Range {
            min_exp: 3,
            max_exp: 2
        })
    );
    assert_eq!(Pow2Range::new(-127, 0), Err(QuantError::Pow2Exponent(-127)));
    assert_eq!(Pow2Range::new(0, 128), Err(QuantError::Pow2Exponent(128)));
    assert!(
        Pow2Range::new(0, 128)
            .unwrap_err()
            .to_string()
            .contains("128")
    );
}

#[test]
fn configs_validate_when_read() {
    let q: Quantizer = serde_json::from_str(r#"{"Unsigned": 4}"#).unwrap();
    assert_eq!(q, Quantizer::Unsigned(Bits::FOUR));
    let err = serde_json::from_str::<Quantizer>(r#"{"Signed": 9}"#).unwrap_err();
    assert!(err.to_string().contains("between 1 and 8, got 9"), "{err}");
    let err = serde_json::from_str::<Quantizer>(r#"{"Pow2": [4, -4]}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("min_exp 4 is greater than max_exp -4"),
        "{err}"
    );
    let round_trip =
        serde_json::to_string(&Quantizer::Pow2(Pow2Range::new(-4, 0).unwrap())).unwrap();
    assert_eq!(
        serde_json::from_str::<Quantizer>(&round_trip).unwrap(),
        Quantizer::Pow2(Pow2Range::new(-4, 0).unwrap())
    );
}
