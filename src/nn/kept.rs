//! What a block folds from its parameters outside training (thresholds, ranges, a kernel),
//! kept for its next call: [`Kept`], keyed on the bits of everything it was folded from.

use std::sync::{Arc, Mutex, PoisonError};

use crate::{inference::thresholds::fold, kernels::eval_norm::EvalNorm};

/// The bits of the values a kept result depends on: floats compared bit for bit (so `−0` and
/// `+0` differ, and a NaN equals itself), each list with its length, `None` apart from empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyBits(Vec<u64>);

impl KeyBits {
    /// Adds a list of floats, or its absence.
    pub(crate) fn floats(mut self, values: Option<&[f32]>) -> Self {
        match values {
            None => self.0.push(u64::MAX),
            Some(values) => {
                self.0.push(values.len() as u64);
                self.0.extend(values.iter().map(|v| u64::from(v.to_bits())));
            }
        }
        self
    }

    /// Adds sizes (and other integers).
    pub(crate) fn sizes(mut self, values: &[usize]) -> Self {
        self.0.push(values.len() as u64);
        self.0.extend(values.iter().map(|&v| v as u64));
        self
    }

    /// Adds a batch norm as it is evaluated: mean, `sqrt(var + ε)`, `γ` and `β`.
    pub(crate) fn norm(self, norm: &EvalNorm) -> Self {
        self.floats(Some(&norm.mean))
            .floats(Some(&norm.std))
            .floats(Some(&norm.gamma))
            .floats(Some(&norm.beta))
    }

    /// Adds bytes.
    pub(crate) fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.push(bytes.len() as u64);
        self.0.extend(bytes.chunks(8).map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        }));
        self
    }
}

/// A value built from a block's parameters, kept with its key for the next call. Clones of the
/// block share it; since the key holds everything the value depends on, a clone whose
/// parameters changed (trained further, loaded) builds its own and keeps that instead.
pub(crate) struct Kept<K, V>(Arc<Mutex<Option<KeptEntry<K, V>>>>);

/// A kept value and its key.
type KeptEntry<K, V> = (K, Arc<V>);

impl<K, V> Kept<K, V> {
    /// The value for `key`: the kept one if it was built for an equal key, else the one `build`
    /// makes (kept in its place), or `None` where `build` gives none.
    pub(crate) fn get_or_build(&self, key: K, build: impl FnOnce() -> Option<V>) -> Option<Arc<V>>
    where
        K: PartialEq,
    {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((kept_key, value)) = kept.as_ref()
            && *kept_key == key
        {
            return Some(value.clone());
        }
        let value = Arc::new(build()?);
        *kept = Some((key, value.clone()));
        Some(value)
    }
}

impl<V> Kept<KeyBits, V> {
    /// `finish` of the fold of `norm` after a product `|y| ≤ k` scaled by `scale` and shifted
    /// by `bias` ([`fold`]: per channel, the range of products that binarize to `+1`), or the
    /// value kept from a call where all of them were the same.
    pub(crate) fn fold(
        &self,
        norm: &EvalNorm,
        k: usize,
        scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        finish: impl FnOnce(Vec<f32>, Vec<f32>) -> Option<V>,
    ) -> Option<Arc<V>> {
        let key = KeyBits::default()
            .floats(scale)
            .floats(bias)
            .norm(norm)
            .sizes(&[k]);
        self.get_or_build(key, || {
            let (lo, hi) = fold(norm, k, scale, bias);
            finish(lo, hi)
        })
    }
}

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K, V> Clone for Kept<K, V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<K, V> std::fmt::Debug for Kept<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_every_difference() {
        let key = |bias: Option<&[f32]>, sizes: &[usize], bytes: &[u8]| {
            KeyBits::default().floats(bias).sizes(sizes).bytes(bytes)
        };
        let base = key(Some(&[0.0, 1.5]), &[3], &[1, 2, 3]);
        assert_eq!(base, key(Some(&[0.0, 1.5]), &[3], &[1, 2, 3]));
        assert_ne!(base, key(Some(&[-0.0, 1.5]), &[3], &[1, 2, 3]));
        assert_ne!(base, key(None, &[3], &[1, 2, 3]));
        assert_ne!(key(Some(&[]), &[], &[]), key(None, &[], &[]));
        assert_ne!(base, key(Some(&[0.0, 1.5]), &[4], &[1, 2, 3]));
        assert_ne!(base, key(Some(&[0.0, 1.5]), &[3], &[1, 2, 3, 0]));
        let nan = key(Some(&[f32::NAN]), &[], &[]);
        assert_eq!(nan, key(Some(&[f32::NAN]), &[], &[]));
    }

    #[test]
    fn builds_once_per_key_and_shares_with_clones() {
        let kept = Kept::<u32, u32>::default();
        let clone = kept.clone();
        let builds = std::cell::Cell::new(0);
        let get = |kept: &Kept<u32, u32>, key: u32| {
            *kept
                .get_or_build(key, || {
                    builds.set(builds.get() + 1);
                    Some(key * 10)
                })
                .unwrap()
        };
        assert_eq!(get(&kept, 1), 10);
        assert_eq!(get(&clone, 1), 10);
        assert_eq!(get(&clone, 2), 20);
        assert_eq!(get(&kept, 2), 20);
        assert_eq!(get(&kept, 1), 10);
        assert_eq!(builds.get(), 3);
        assert!(kept.get_or_build(3, || None).is_none());
        assert_eq!(get(&kept, 1), 10, "a failed build keeps the last value");
        assert_eq!(builds.get(), 3);
    }
}
