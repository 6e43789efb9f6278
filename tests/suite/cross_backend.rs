//! The packed layout is one for every backend: bytes packed on the CPU load on the GPU and give
//! the same products, and the GPU packs the same bytes.

use burn::backend::{NdArray, Wgpu};
use burn::tensor::Tensor;
use burn_qnn::{
    QnnBackend,
    ops::{self, Encoding, Packed},
    quant::Bits,
};

use crate::reference::{tensor, uniform, values};

fn packed_bytes<B: QnnBackend>(data: &[f32], shape: [usize; 2], encoding: Encoding) -> Vec<u8> {
    let device = Default::default();
    Packed::new(tensor::<B, 2>(data.to_vec(), shape, &device), encoding).to_bytes()
}

#[test]
fn the_gpu_packs_the_bytes_the_cpu_packs() {
    let _rng = crate::reference::backend_rng_lock();
    for k in [1, 31, 32, 33, 64, 65, 1000, 4097] {
        let signs = uniform(3 * k, -1.0, 1.0, k as u64);
        assert_eq!(
            packed_bytes::<Wgpu>(&signs, [3, k], Encoding::Signs),
            packed_bytes::<NdArray>(&signs, [3, k], Encoding::Signs),
            "signs, k = {k}"
        );
        let codes: Vec<f32> = uniform(3 * k, -2.0, 300.0, k as u64 + 1)
            .into_iter()
            .map(f32::floor)
            .collect();
        let encoding = Encoding::Codes(Bits::new(6).unwrap());
        assert_eq!(
            packed_bytes::<Wgpu>(&codes, [3, k], encoding),
            packed_bytes::<NdArray>(&codes, [3, k], encoding),
            "6-bit codes, k = {k}"
        );
    }
}

#[test]
fn weights_packed_on_the_cpu_run_on_the_gpu() {
    let _rng = crate::reference::backend_rng_lock();
    let (m, k, n) = (5, 1000, 37);
    let (device, gpu) = (Default::default(), Default::default());
    let a = uniform(m * k, -1.0, 1.0, 1);
    let w = uniform(k * n, -1.0, 1.0, 2);

    let cpu_weights = Packed::new(
        tensor::<NdArray, 2>(w.clone(), [k, n], &device).transpose(),
        Encoding::Signs,
    );
    let cpu = values(ops::xnor_matmul_prepacked(
        tensor::<NdArray, 2>(a.clone(), [m, k], &device),
        &cpu_weights,
    ));

    let bytes = cpu_weights.to_bytes();
    let gpu_weights = Packed::<Wgpu>::from_bytes(&bytes, &[n, k], Encoding::Signs, &gpu).unwrap();
    let on_gpu = values(ops::xnor_matmul_prepacked(
        tensor::<Wgpu, 2>(a.clone(), [m, k], &gpu),
        &gpu_weights,
    ));
    assert_eq!(on_gpu, cpu);

    let float_operands = values(ops::xnor_matmul(
        tensor::<Wgpu, 2>(a, [m, k], &gpu),
        Tensor::<Wgpu, 2>::from_data(cpu_weights.unpack::<2>().transpose().into_data(), &gpu),
    ));
    assert_eq!(float_operands, cpu);
}

/// A packed network saved on NdArray (which runs it on the CPU kernels) loads on Wgpu (which
/// runs it on tensor ops) with the same record, the same predictions and the same scores up to
/// the GPU's float rounding in the last batch norm.
#[test]
fn a_packed_network_saved_on_the_cpu_loads_on_the_gpu() {
    let _rng = crate::reference::backend_rng_lock();
    use burn::backend::Autodiff;
    use burn_qnn::{inference::PackedNet, models::NetConfig};

    use crate::modules::{images, scramble_norms, trained};

    let (device, gpu) = (Default::default(), Default::default());
    let config = NetConfig::cifar10().with_width(1.0 / 16.0);
    let net = scramble_norms(trained::<Autodiff<NdArray>>(&config, &device), 11);
    let cpu = PackedNet::from_net(&net).unwrap();
    assert!(cpu.runs_on_cpu_kernels());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.mpk");
    cpu.save(&path).unwrap();
    let gpu_net = PackedNet::<Wgpu>::load(&path, &gpu).unwrap();
    assert_eq!(gpu_net.record(), cpu.record());

    let x = images::<NdArray>(6, 3, 32, &device);
    let x_gpu = Tensor::<Wgpu, 4>::from_data(x.to_data(), &gpu);
    let on_cpu = values(cpu.forward(x));
    let on_gpu = values(gpu_net.forward(x_gpu));
    assert_eq!(on_cpu.len(), on_gpu.len());
    for (a, b) in on_cpu.iter().zip(&on_gpu) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "cpu {a} gpu {b}");
    }
    let argmax = |scores: &[f32]| -> Vec<usize> {
        scores
            .chunks(config.classes)
            .map(|s| (0..s.len()).max_by(|&i, &j| s[i].total_cmp(&s[j])).unwrap())
            .collect()
    };
    assert_eq!(argmax(&on_cpu), argmax(&on_gpu));
}

/// A model of the user's own packed and saved on NdArray loads on Wgpu: the same packed
/// words, and exactly the outputs of the same model (its f32 record) on Wgpu.
#[test]
fn a_packed_user_model_saved_on_the_cpu_loads_on_the_gpu() {
    let _rng = crate::reference::backend_rng_lock();
    use crate::modules::images;
    use crate::packing::Widths;
    use burn::{
        module::Module,
        record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder},
    };
    use burn_qnn::inference::{load_packed, pack, save_packed};

    let (device, gpu) = (Default::default(), Default::default());
    let widths = Widths {
        in_channels: 3,
        channels: 37,
        hidden: 70,
        scaled: true,
    };
    let model = widths.init::<NdArray>(&device);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.mpk");
    save_packed(&model, &path).unwrap();
    let packed_on_gpu = load_packed(widths.init::<Wgpu>(&gpu), &path, &gpu).unwrap();
    let gpu_words = packed_on_gpu
        .clone()
        .into_record()
        .body
        .packed
        .unwrap()
        .words;
    let cpu_words = pack(&model)
        .unwrap()
        .into_record()
        .body
        .packed
        .unwrap()
        .words;
    assert_eq!(
        gpu_words.val().into_data().convert::<i32>(),
        cpu_words.val().into_data().convert::<i32>(),
        "the same packed words"
    );

    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let f32_record = Recorder::<NdArray>::record(&recorder, model.into_record(), ()).unwrap();
    let record = Recorder::<Wgpu>::load(&recorder, f32_record, &gpu).unwrap();
    let model_on_gpu = widths.init::<Wgpu>(&gpu).load_record(record);

    let x = images::<Wgpu>(3, 3, 8, &gpu);
    let expected = values(model_on_gpu.forward(x.clone()));
    let found = values(packed_on_gpu.forward(x));
    crate::reference::assert_exact("packed on the gpu", &expected, &found, &expected);
}
