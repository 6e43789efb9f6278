//! Packed products against the float product of the ±1 values or integer codes, exactly.

use burn::tensor::Tensor;
use burn_qnn::{
    QnnBackend,
    ops::{self, Encoding, Packed, PackedError},
    quant::Bits,
};

use crate::reference::{tensor, uniform, values};

/// The reduction lengths of the issue: around the 32/64-bit word sizes and far from them.
const KS: [usize; 8] = [1, 31, 63, 64, 65, 127, 1000, 4097];

fn sign(x: f32) -> f64 {
    if x < 0.0 { -1.0 } else { 1.0 }
}

/// `Σ_t f(a[i, t]) · g(b[t, j])` for row-major `a` `[m, k]` and `b` `[k, n]`, in f64.
fn reference(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    f: impl Fn(f32) -> f64,
    g: impl Fn(f32) -> f64,
) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: f64 = (0..k).map(|t| f(a[i * k + t]) * g(b[t * n + j])).sum();
            out[i * n + j] = dot as f32;
        }
    }
    out
}

/// Integer codes in `[0, 2^bits)` stored as floats.
fn codes(len: usize, bits: u32, seed: u64) -> Vec<f32> {
    uniform(len, 0.0, (1u32 << bits) as f32, seed)
        .into_iter()
        .map(f32::floor)
        .collect()
}

/// Every `k` of [`KS`] with several `m × n`; `quick` keeps a few (software Vulkan compiles a
/// shader per new shape, seconds each).
pub fn xnor_matmul_matches_float<B: QnnBackend>(device: &B::Device, quick: bool) {
    // Few rows (the GPU's one-output-per-thread kernel) and many (its tiled kernel, with
    // partial tiles).
    let shapes: &[(usize, usize)] = if quick {
        &[(1, 9), (5, 3), (70, 13)]
    } else {
        &[(1, 9), (7, 1), (5, 3), (13, 70), (70, 13), (16, 1)]
    };
    for (seed, &k) in KS.iter().enumerate() {
        if quick && ![1, 64, 65, 4097].contains(&k) {
            continue;
        }
        for &(m, n) in shapes {
            let a = uniform(m * k, -1.0, 1.0, seed as u64);
            let b = uniform(k * n, -1.0, 1.0, 100 + seed as u64);
            let expected = reference(&a, &b, (m, k, n), sign, sign);
            let ta = tensor::<B, 2>(a.clone(), [m, k], device);
            let tb = tensor::<B, 2>(b.clone(), [k, n], device);
            let got = values(ops::xnor_matmul(ta.clone(), tb.clone()));
            assert_eq!(got, expected, "xnor_matmul {m}×{k}×{n}");
            let prepacked = Packed::new(tb.transpose(), Encoding::Signs);
            let got = values(ops::xnor_matmul_prepacked(ta, &prepacked));
            assert_eq!(got, expected, "xnor_matmul_prepacked {m}×{k}×{n}");
        }
    }
}

pub fn xnor_matmul_batched<B: QnnBackend>(device: &B::Device) {
    for m in [4, 20] {
        xnor_matmul_batched_with_rows::<B>(m, device);
    }
}

fn xnor_matmul_batched_with_rows<B: QnnBackend>(m: usize, device: &B::Device) {
    let (k, n) = (65, 6);
    let a = uniform(2 * 3 * m * k, -1.0, 1.0, 7);
    let b = uniform(2 * 3 * k * n, -1.0, 1.0, 8);
    let out = values(ops::xnor_matmul(
        tensor::<B, 4>(a.clone(), [2, 3, m, k], device),
        tensor::<B, 4>(b.clone(), [2, 3, k, n], device),
    ));
    for batch in 0..6 {
        let expected = reference(
            &a[batch * m * k..][..m * k],
            &b[batch * k * n..][..k * n],
            (m, k, n),
            sign,
            sign,
        );
        assert_eq!(&out[batch * m * n..][..m * n], expected, "batch {batch}");
    }
    // One weight matrix shared by every batch entry.
    let w = uniform(k * n, -1.0, 1.0, 9);
    let out = values(ops::xnor_matmul(
        tensor::<B, 3>(a[..3 * m * k].to_vec(), [3, m, k], device),
        tensor::<B, 3>(w.clone(), [1, k, n], device),
    ));
    for batch in 0..3 {
        let expected = reference(&a[batch * m * k..][..m * k], &w, (m, k, n), sign, sign);
        assert_eq!(
            &out[batch * m * n..][..m * n],
            expected,
            "shared weights, batch {batch}"
        );
    }
}

pub fn extreme_operands<B: QnnBackend>(device: &B::Device) {
    let (m, k, n) = (3, 100, 4);
    for (va, vb, expected) in [
        (1.0, 1.0, 100.0),
        (-1.0, -1.0, 100.0),
        (1.0, -1.0, -100.0),
        (-0.0, 0.5, 100.0),
    ] {
        let out = values(ops::xnor_matmul(
            Tensor::<B, 2>::full([m, k], va, device),
            Tensor::<B, 2>::full([k, n], vb, device),
        ));
        assert!(out.iter().all(|&v| v == expected), "{va} × {vb}: {out:?}");
    }
}

pub fn bit_serial_products<B: QnnBackend>(device: &B::Device) {
    for (seed, &k) in [1usize, 63, 65, 1000].iter().enumerate() {
        let (m, n) = (3, 5);
        for bits in 1..=8 {
            let enc = Encoding::Codes(Bits::new(bits).unwrap());
            let a = codes(m * k, bits, seed as u64 * 10 + bits as u64);
            let w = uniform(k * n, -1.0, 1.0, 99 + bits as u64);
            let ta = Packed::new(tensor::<B, 2>(a.clone(), [m, k], device), enc);
            let tw = Packed::new(
                tensor::<B, 2>(w.clone(), [k, n], device).transpose(),
                Encoding::Signs,
            );
            let expected = reference(&a, &w, (m, k, n), f64::from, sign);
            assert_eq!(
                values(ops::packed_matmul::<B, 2>(&ta, &tw)),
                expected,
                "{bits}-bit codes × signs, k = {k}"
            );

            // Signs on the left, codes on the right.
            let s = uniform(m * k, -1.0, 1.0, 5);
            let c = codes(k * n, bits, 6);
            let ts = Packed::new(tensor::<B, 2>(s.clone(), [m, k], device), Encoding::Signs);
            let tc = Packed::new(tensor::<B, 2>(c.clone(), [k, n], device).transpose(), enc);
            let expected = reference(&s, &c, (m, k, n), sign, f64::from);
            assert_eq!(
                values(ops::packed_matmul::<B, 2>(&ts, &tc)),
                expected,
                "signs × {bits}-bit codes"
            );

            let other_bits = 9 - bits;
            let enc2 = Encoding::Codes(Bits::new(other_bits).unwrap());
            let c2 = codes(k * n, other_bits, 7);
            let tc2 = Packed::new(tensor::<B, 2>(c2.clone(), [k, n], device).transpose(), enc2);
            let expected = reference(&a, &c2, (m, k, n), f64::from, f64::from);
            assert_eq!(
                values(ops::packed_matmul::<B, 2>(&ta, &tc2)),
                expected,
                "{bits}-bit × {other_bits}-bit codes, k = {k}"
            );
        }
    }
}

pub fn pack_round_trip<B: QnnBackend>(device: &B::Device) {
    let x = uniform(3 * 4 * 70, -2.0, 2.0, 21);
    let packed = Packed::new(
        tensor::<B, 3>(x.clone(), [3, 4, 70], device),
        Encoding::Signs,
    );
    assert_eq!(packed.shape(), [3, 4, 70]);
    let back = values(packed.unpack::<3>());
    let signs: Vec<f32> = x.iter().map(|&v| sign(v) as f32).collect();
    assert_eq!(back, signs);

    let c = codes(5 * 33, 5, 22);
    let enc = Encoding::Codes(Bits::new(5).unwrap());
    let packed = Packed::new(tensor::<B, 2>(c.clone(), [5, 33], device), enc);
    assert_eq!(packed.encoding(), enc);
    assert_eq!(values(packed.unpack::<2>()), c);

    // Through bytes, with length 8 bytes a row of up to 64 values.
    let bytes = packed.to_bytes();
    assert_eq!(bytes.len(), 5 * 5 * 8);
    let again = Packed::<B>::from_bytes(&bytes, &[5, 33], enc, device).unwrap();
    assert_eq!(values(again.unpack::<2>()), c);
}

pub fn packed_bytes_layout<B: QnnBackend>(device: &B::Device) {
    // Value j of a row is bit j % 8 of byte j / 8; 1 stands for −1.
    let mut row = vec![1.0f32; 70];
    for j in [0, 9, 63, 64, 69] {
        row[j] = -1.0;
    }
    let bytes = Packed::new(tensor::<B, 2>(row, [1, 70], device), Encoding::Signs).to_bytes();
    let mut expected = vec![0u8; 16];
    for j in [0, 9, 63, 64, 69] {
        expected[j / 8] |= 1 << (j % 8);
    }
    assert_eq!(bytes, expected);
}

pub fn bad_packed_bytes<B: QnnBackend>(device: &B::Device) {
    let enc = Encoding::Signs;
    assert_eq!(
        Packed::<B>::from_bytes(&[0; 15], &[2, 64], enc, device).unwrap_err(),
        PackedError::Length {
            expected: 16,
            actual: 15,
            shape: vec![2, 64]
        }
    );
    assert_eq!(
        Packed::<B>::from_bytes(&[0; 8], &[8], enc, device).unwrap_err(),
        PackedError::Rank(1)
    );
    // Shapes whose byte count (or value count) overflows: a typed error, in release builds
    // too (where the unchecked products wrap around, here to 0 bytes).
    for shape in [
        vec![1 << 61, 1, 64],
        vec![1 << 32, 1 << 32, 64],
        vec![1 << 40, 1 << 30],
        vec![usize::MAX, 2, 1],
    ] {
        assert_eq!(
            Packed::<B>::from_bytes(&[], &shape, enc, device).unwrap_err(),
            PackedError::TooLarge { shape }
        );
    }
    assert!(matches!(
        Packed::<B>::from_bytes(&[], &[1 << 58, 1, 64], Encoding::Codes(Bits::EIGHT), device),
        Err(PackedError::TooLarge { .. })
    ));
    let mut bytes = vec![0u8; 16];
    bytes[15] = 0x80; // bit 63 of row 1, past k = 60
    assert_eq!(
        Packed::<B>::from_bytes(&bytes, &[2, 60], enc, device).unwrap_err(),
        PackedError::Padding { row: 1 }
    );
}

pub fn shape_mismatch_panics<B: QnnBackend>(device: &B::Device) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ops::xnor_matmul(
            Tensor::<B, 2>::ones([2, 5], device),
            Tensor::<B, 2>::ones([6, 3], device),
        )
    }));
    let message = panic_message(result.unwrap_err());
    assert!(
        message.contains("xnor_matmul") && message.contains("(5 and 6)"),
        "{message}"
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ops::xnor_matmul(
            Tensor::<B, 3>::ones([2, 2, 5], device),
            Tensor::<B, 3>::ones([3, 5, 3], device),
        )
    }));
    let message = panic_message(result.unwrap_err());
    assert!(
        message.contains("batch dimensions [2] and [3]"),
        "{message}"
    );
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs the CPU products on every instruction-set path this machine has, each pinned in turn
/// (on this thread, so the other tests running meanwhile keep theirs).
#[cfg(feature = "ndarray")]
#[test]
fn every_cpu_instruction_set_gives_the_float_product() {
    use burn::backend::NdArray;
    use burn_qnn::kernels::isa::{Isa, force_isa, with_isa};

    let device = Default::default();
    for isa in Isa::available() {
        with_isa(isa, || {
            xnor_matmul_matches_float::<NdArray>(&device, false);
            bit_serial_products::<NdArray>(&device);
        });
    }
    for isa in Isa::ALL {
        if !isa.is_available() {
            assert!(
                force_isa(Some(isa)).is_err(),
                "{isa:?} is not available here"
            );
        }
    }
}
