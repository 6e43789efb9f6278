//! The micro-kernel: a 32 × 32 block of f32 sums in four tiles, over a list of steps, each step
//! the two 16-column tiles of `b` against two 16-row tiles of `a` in each of `a`'s parts (one, or
//! the three of the split).
//!
//! `a` tiles are 16 rows × 32 bf16 (row-major, `a_stride` values between rows); part `s` is
//! `s·split_stride` values after part 0. `b` tiles are in AMX's pair layout: row `r`
//! holds, for each of 16 columns `c`, the summed values `2r` and `2r + 1` at bf16 `2c` and
//! `2c + 1`, `b_stride` values between rows. `TDPBF16PS` then adds
//! `Σ_k a[i][k]·b[k/2][2j + k%2]` to sum `[i][j]`. Tile rows that start on a 64-byte line load
//! fastest: the kernels lay their operands out so that they do.

use super::AmxBf16;

/// One step of a block: where its tiles start, in bf16 values from the operands' starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Step {
    /// The first `a` tile of part 0 (rows 0 .. 16 of the block).
    pub(super) a0: usize,
    /// The second `a` tile of part 0 (rows 16 .. 32).
    pub(super) a1: usize,
    /// The first `b` tile (columns 0 .. 16).
    pub(super) b0: usize,
    /// The second `b` tile (columns 16 .. 32).
    pub(super) b1: usize,
}

/// The steps of a block and the strides of its operands, with how far the tiles reach: every
/// call of [`TilePlan::block`] checks its slices against these reaches.
#[derive(Debug)]
pub(super) struct TilePlan {
    /// Per step, the byte offsets `[a0, a1, b0, b1]` and the number of parts of `a` (the
    /// micro-kernel reads it there, short of a register).
    steps: Vec<[isize; 5]>,
    a_stride: usize,
    b_stride: usize,
    split_stride: usize,
    /// bf16 values of `a` and of `b` the steps read, from the operands' starts.
    a_reach: usize,
    b_reach: usize,
}

/// bf16 values in a tile row.
const ROW: usize = 32;

impl TilePlan {
    /// A plan of `steps` (at least one) over operands with these strides (in bf16 values) and
    /// `parts` (at least one) parts of `a`.
    pub(super) fn new(
        steps: &[Step],
        a_stride: usize,
        b_stride: usize,
        split_stride: usize,
        parts: usize,
    ) -> Self {
        assert!(
            !steps.is_empty() && parts > 0,
            "a tile block needs at least one step and one part"
        );
        let a_reach = steps
            .iter()
            .map(|s| s.a0.max(s.a1) + (parts - 1) * split_stride + 15 * a_stride + ROW)
            .max()
            .unwrap_or(0);
        let b_reach = steps
            .iter()
            .map(|s| s.b0.max(s.b1) + 15 * b_stride + ROW)
            .max()
            .unwrap_or(0);
        let bytes = |values: usize| isize::try_from(2 * values).expect("offsets fit isize");
        Self {
            steps: steps
                .iter()
                .map(|s| {
                    let parts = isize::try_from(parts).expect("parts fit isize");
                    [bytes(s.a0), bytes(s.a1), bytes(s.b0), bytes(s.b1), parts]
                })
                .collect(),
            a_stride,
            b_stride,
            split_stride,
            a_reach,
            b_reach,
        }
    }

    /// `c[i·c_stride + j]` for `i, j < 32`: the sums over every step and part, added to `c`'s
    /// values where `accumulate`, else replacing them.
    ///
    /// # Panics
    /// If `a`, `b` or `c` is shorter than the block reaches.
    pub(super) fn block(
        &self,
        proof: AmxBf16,
        a: &[u16],
        b: &[u16],
        c: &mut [f32],
        c_stride: usize,
        accumulate: bool,
    ) {
        assert!(
            a.len() >= self.a_reach && b.len() >= self.b_reach && c.len() >= 31 * c_stride + 32,
            "AMX block: an operand is shorter than its tiles reach"
        );
        let _ = proof;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the proof says this process may run AMX-BF16; every tile the steps load lies
        // inside `a` and `b` (their reaches, checked above), and the four sum tiles inside `c`.
        unsafe {
            x86::block_2x2_split3(
                a.as_ptr().cast(),
                2 * self.a_stride,
                b.as_ptr().cast(),
                2 * self.b_stride,
                2 * self.split_stride,
                self.steps.as_ptr(),
                self.steps.len(),
                c.as_mut_ptr().cast(),
                4 * c_stride,
                accumulate,
            );
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Four f32 sum tiles `tmm0 ..= tmm3` (rows 0–15 and 16–31 by columns 0–15 and 16–31) loaded
    /// from `c` (or zeroed), then per step: `tmm6`, `tmm7` the two `b` tiles, and for each of the
    /// step's parts `tmm4`, `tmm5` its two `a` tiles, four `TDPBF16PS`; the sums stored back to
    /// `c`. All strides and offsets are in bytes.
    ///
    /// # Safety
    /// The process must be allowed AMX-BF16; `count ≥ 1` and each step's `parts ≥ 1`; every
    /// tile of every step `[a0, a1, b0, b1, parts]` (16 rows of 64 bytes, a stride apart, from
    /// `a + a0 + s·split_stride`, `a + a1 + s·split_stride` for `s < parts`, `b + b0` and
    /// `b + b1`) must lie in readable memory, and the 32 rows of 128 bytes
    /// from `c`, `c_stride` apart, in writable memory.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) unsafe fn block_2x2_split3(
        a: *const u8,
        a_stride: usize,
        b: *const u8,
        b_stride: usize,
        split_stride: usize,
        steps: *const [isize; 5],
        count: usize,
        c: *mut u8,
        c_stride: usize,
        accumulate: bool,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{t}]",
                "test {p}, {p}",
                "jz 3f",
                "tileloadd tmm0, [{c} + {cs} * 1]",
                "tileloadd tmm1, [{c} + {cs} * 1 + 64]",
                "mov {t}, {cs}",
                "shl {t}, 4",
                "add {t}, {c}",
                "tileloadd tmm2, [{t} + {cs} * 1]",
                "tileloadd tmm3, [{t} + {cs} * 1 + 64]",
                "jmp 4f",
                "3:",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "4:",
                "mov {t}, [{tbl} + 16]",
                "lea {p}, [{b} + {t}]",
                "tileloadd tmm6, [{p} + {bst} * 1]",
                "mov {t}, [{tbl} + 24]",
                "lea {p}, [{b} + {t}]",
                "tileloadd tmm7, [{p} + {bst} * 1]",
                "mov {t}, [{tbl}]",
                "lea {p}, [{a} + {t}]",
                "mov {t}, [{tbl} + 8]",
                "add {t}, {a}",
                "mov {k}, [{tbl} + 32]",
                "5:",
                "tileloadd tmm4, [{p} + {ast} * 1]",
                "tileloadd tmm5, [{t} + {ast} * 1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {p}, {ss}",
                "add {t}, {ss}",
                "dec {k}",
                "jnz 5b",
                "add {tbl}, 40",
                "dec {n}",
                "jnz 4b",
                "tilestored [{c} + {cs} * 1], tmm0",
                "tilestored [{c} + {cs} * 1 + 64], tmm1",
                "mov {t}, {cs}",
                "shl {t}, 4",
                "add {t}, {c}",
                "tilestored [{t} + {cs} * 1], tmm2",
                "tilestored [{t} + {cs} * 1 + 64], tmm3",
                "tilerelease",
                t = inout(reg) &crate::kernels::amx::FULL_TILES as *const _ as usize => _,
                p = inout(reg) usize::from(accumulate) => _,
                a = in(reg) a,
                ast = in(reg) a_stride,
                b = in(reg) b,
                bst = in(reg) b_stride,
                ss = in(reg) split_stride,
                k = out(reg) _,
                tbl = inout(reg) steps => _,
                n = inout(reg) count => _,
                c = in(reg) c,
                cs = in(reg) c_stride,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block over random ±1 and small-integer bf16 operands equals its definition exactly.
    #[test]
    fn a_block_sums_its_steps_and_parts() {
        let Some(proof) = AmxBf16::if_available() else {
            eprintln!("skipped: this machine has no AMX-BF16");
            return;
        };
        let bf16 = |v: f32| (v.to_bits() >> 16) as u16;
        let value = |b: u16| f32::from_bits(u32::from(b) << 16);
        let mut state = 7u64;
        let mut next = move |m: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 33) % m) as i32
        };
        let (a_stride, b_stride, steps_n) = (40, 48, 3);
        let split_stride = 32 * a_stride * steps_n + 64;
        let a: Vec<u16> = (0..3 * split_stride)
            .map(|_| bf16((next(9) - 4) as f32))
            .collect();
        let b: Vec<u16> = (0..16 * b_stride * steps_n + 64)
            .map(|_| bf16((2 * next(2) - 1) as f32))
            .collect();
        // Step i: a rows at i·32 values and 16 rows further; b from i·16 rows, the second tile
        // 32 values further.
        let steps: Vec<Step> = (0..steps_n)
            .map(|i| Step {
                a0: i * 32 * a_stride,
                a1: i * 32 * a_stride + 16 * a_stride,
                b0: i * 16 * b_stride,
                b1: i * 16 * b_stride + 32,
            })
            .collect();
        let plan = TilePlan::new(&steps, a_stride, b_stride, split_stride, 3);
        let c_stride = 37;
        let start: Vec<f32> = (0..32 * c_stride).map(|i| (i % 5) as f32).collect();
        for accumulate in [false, true] {
            let mut c = start.clone();
            plan.block(proof, &a, &b, &mut c, c_stride, accumulate);
            for i in 0..32 {
                for j in 0..32 {
                    let mut sum = if accumulate {
                        start[i * c_stride + j]
                    } else {
                        0.0
                    };
                    for step in &steps {
                        let tile = if j < 16 { step.b0 } else { step.b1 };
                        for s in 0..3 {
                            let row = s * split_stride
                                + if i < 16 {
                                    step.a0 + i * a_stride
                                } else {
                                    step.a1 + (i - 16) * a_stride
                                };
                            for k in 0..32 {
                                let bv = b[tile + (k / 2) * b_stride + 2 * (j % 16) + k % 2];
                                sum += value(a[row + k]) * value(bv);
                            }
                        }
                    }
                    assert_eq!(
                        c[i * c_stride + j],
                        sum,
                        "sum [{i}][{j}], accumulate {accumulate}"
                    );
                }
            }
        }
    }
}
