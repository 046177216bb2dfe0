//! Per-layer key/value cache for incremental decoding (llama-burn `cache.rs`, simplified to
//! concatenation: the cache grows with the sequence and can be cloned to share a prefix).

use burn::tensor::{backend::Backend, Tensor};

/// Keys and values of one decoder layer, `[batch, n_kv_heads, cached_len, head_dim]` each.
///
/// Kept outside the module (llama-burn style) so one model serves training (no cache) and
/// generation (one `KvCache` per layer, see [`KvCache::for_layers`]).
#[derive(Debug, Clone, Default)]
pub struct KvCache<B: Backend> {
    keys: Option<Tensor<B, 4>>,
    values: Option<Tensor<B, 4>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            keys: None,
            values: None,
        }
    }

    /// One empty cache per decoder layer.
    pub fn for_layers(n_layers: usize) -> Vec<Self> {
        (0..n_layers).map(|_| Self::new()).collect()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `keys`/`values` `[batch, n_kv_heads, new_len, head_dim]` and returns the full
    /// cached keys and values.
    pub fn append(
        &mut self,
        keys: Tensor<B, 4>,
        values: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let keys = match self.keys.take() {
            Some(old) => Tensor::cat(vec![old, keys], 2),
            None => keys,
        };
        let values = match self.values.take() {
            Some(old) => Tensor::cat(vec![old, values], 2),
            None => values,
        };
        self.keys = Some(keys.clone());
        self.values = Some(values.clone());
        (keys, values)
    }

    /// Keeps only the batch rows in `rows` (e.g. drop finished sequences).
    pub fn select_rows(&mut self, rows: Tensor<B, 1, burn::tensor::Int>) {
        self.keys = self.keys.take().map(|k| k.select(0, rows.clone()));
        self.values = self.values.take().map(|v| v.select(0, rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn append_concatenates_along_sequence() {
        let device = Default::default();
        let mut cache = KvCache::<NdArray>::new();
        assert!(cache.is_empty());
        let (k, _) = cache.append(
            Tensor::ones([2, 1, 3, 4], &device),
            Tensor::ones([2, 1, 3, 4], &device),
        );
        assert_eq!(k.dims(), [2, 1, 3, 4]);
        let (k, v) = cache.append(
            Tensor::zeros([2, 1, 1, 4], &device),
            Tensor::zeros([2, 1, 1, 4], &device),
        );
        assert_eq!(k.dims(), [2, 1, 4, 4]);
        assert_eq!(cache.len(), 4);
        assert_eq!(v.slice([0..2, 0..1, 3..4, 0..4]).sum().into_scalar(), 0.0);
    }
}
