//! The collection's schema on the server: created when missing (dense vector, BM25 sparse vector
//! with IDF, keyword index on `source`), checked when it exists, and upgraded in place for a
//! collection made before hybrid retrieval (BM25 declared, then filled from the stored chunk
//! text). Run once per process, at first contact; an upgrade cut off part-way resumes at the
//! next.

use qdrant_client::QdrantError;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    CollectionParams, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, CreateVectorNameRequestBuilder, Distance, FieldType, Filter,
    Modifier, NamedVectors, PointVectors, SparseVectorCreationConfigBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpdatePointVectorsBuilder,
    VectorParamsBuilder, VectorsConfigBuilder,
};

use super::{QdrantIndex, failed, retry};
use crate::retrieval::IndexError;
use crate::retrieval::bm25::SPARSE;
use crate::retrieval::edge::DENSE;

/// Points per page when giving an older collection its BM25 vectors.
const BACKFILL_BATCH: usize = 256;

impl QdrantIndex {
    /// Creates the collection when missing, checks it, and finishes any upgrade.
    pub(super) async fn ensure_collection(&self) -> Result<(), IndexError> {
        let name = self.collection.clone();
        let exists = retry(self.deadline, || {
            self.client.collection_exists(name.clone())
        })
        .await?;
        if !exists {
            self.create_collection().await?;
        }
        let has_bm25 = self.verify().await?;
        // Every time, not only after creating: idempotent, and a start that died between the two
        // must not leave `source` filters scanning every point.
        retry(self.deadline, || {
            self.client.create_field_index(
                CreateFieldIndexCollectionBuilder::new(
                    &self.collection,
                    "source",
                    FieldType::Keyword,
                )
                .wait(true),
            )
        })
        .await?;
        if !has_bm25 {
            self.declare_bm25().await?;
        }
        // Also finishes an upgrade that was interrupted part-way.
        self.backfill_bm25().await
    }

    async fn create_collection(&self) -> Result<(), IndexError> {
        tracing::info!(collection = %self.collection, endpoint = %self.endpoint, "creating the Qdrant collection");
        let mut dense = VectorsConfigBuilder::default();
        dense.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(self.dim as u64, Distance::Cosine),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf as i32),
        );
        let created = self
            .client
            .create_collection(
                CreateCollectionBuilder::new(&self.collection)
                    .vectors_config(dense)
                    .sparse_vectors_config(sparse),
            )
            .await;
        match created {
            Ok(_) => {}
            // Another replica created it first.
            Err(QdrantError::ResponseError { status })
                if status.code() == tonic::Code::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
        Ok(())
    }

    /// Checks the dense vector's name, size and distance; returns whether the BM25 vector exists.
    async fn verify(&self) -> Result<bool, IndexError> {
        let name = self.collection.clone();
        let info = retry(self.deadline, || self.client.collection_info(name.clone())).await?;
        let params = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .ok_or_else(|| IndexError::Engine("collection info without parameters".into()))?;
        check_params(params, self.dim).map_err(|what| {
            IndexError::Open(format!(
                "the Qdrant collection {:?} at {} {what}; point RAGCHAT_QDRANT_COLLECTION at \
                 another collection (ragchat creates it) or re-create this one",
                self.collection, self.endpoint
            ))
        })
    }

    /// Declares the BM25 vector in a collection made before hybrid retrieval.
    async fn declare_bm25(&self) -> Result<(), IndexError> {
        tracing::info!(collection = %self.collection, "declaring BM25 vectors in a collection made before hybrid retrieval");
        let declared = self
            .client
            .create_vector_name(
                CreateVectorNameRequestBuilder::new(
                    &self.collection,
                    SPARSE,
                    SparseVectorCreationConfigBuilder::default().modifier(Modifier::Idf as i32),
                )
                .wait(true),
            )
            .await;
        match declared {
            Ok(_) => Ok(()),
            Err(QdrantError::ResponseError { status })
                if status.code() == tonic::Code::Unimplemented =>
            {
                Err(IndexError::Open(format!(
                    "the Qdrant collection {:?} at {} was made before hybrid retrieval, and this \
                     server cannot add its BM25 vector (that needs Qdrant 1.18 or newer): upgrade \
                     the server, or point RAGCHAT_QDRANT_COLLECTION at a new collection and \
                     re-ingest (or `ragchat index import` an export)",
                    self.collection, self.endpoint
                )))
            }
            Err(e) => Err(failed(e)),
        }
    }

    /// Gives every point without a BM25 vector one, from the chunk text it stores.
    async fn backfill_bm25(&self) -> Result<(), IndexError> {
        let without_bm25 = || Filter::must_not([Condition::has_vector(SPARSE)]);
        let missing = retry(self.deadline, || {
            self.client.count(
                CountPointsBuilder::new(&self.collection)
                    .filter(without_bm25())
                    .exact(true),
            )
        })
        .await?
        .result
        .map_or(0, |r| r.count);
        if missing == 0 {
            return Ok(());
        }
        tracing::info!(collection = %self.collection, chunks = missing, "adding BM25 vectors from the stored chunk text");
        // Only the BM25 vector is written, so a chunk that a concurrent ingest replaced or
        // deleted meanwhile is never brought back; updating a point deleted since the page was
        // read fails the call, and the next connect resumes with what is still missing.
        let mut from = None;
        loop {
            let (points, next) = self
                .scroll_page(from, BACKFILL_BATCH, Some(without_bm25()))
                .await?;
            if !points.is_empty() {
                let vectors: Vec<PointVectors> = points
                    .iter()
                    .map(|p| PointVectors {
                        id: Some(p.id.to_string().into()),
                        vectors: Some(
                            NamedVectors::default()
                                .add_vector(SPARSE, self.bm25_vector(&p.payload.text))
                                .into(),
                        ),
                    })
                    .collect();
                retry(self.deadline, || {
                    self.client.update_vectors(
                        UpdatePointVectorsBuilder::new(&self.collection, vectors.clone())
                            .wait(true),
                    )
                })
                .await?;
            }
            match next {
                Some(id) => from = Some(id),
                None => return Ok(()),
            }
        }
    }
}

/// What is wrong with a collection's parameters for an embedder of `dim` dimensions, if
/// anything; else whether its BM25 vector is declared (an older collection gets it added).
fn check_params(params: CollectionParams, dim: usize) -> Result<bool, String> {
    let dense = match params.vectors_config.and_then(|v| v.config) {
        Some(VectorsConfigKind::ParamsMap(map)) => map.map.get(DENSE).cloned(),
        _ => None,
    };
    let Some(dense) = dense else {
        return Err(format!("has no vector named {DENSE:?}"));
    };
    if dense.size != dim as u64 {
        return Err(format!(
            "holds {}-dimensional vectors but the embedder makes {dim}-dimensional ones",
            dense.size
        ));
    }
    if dense.distance != Distance::Cosine as i32 {
        return Err(format!("does not use cosine distance for {DENSE:?}"));
    }
    let Some(bm25) = params
        .sparse_vectors_config
        .and_then(|s| s.map.get(SPARSE).cloned())
    else {
        return Ok(false);
    };
    // Without the IDF modifier the server scores raw term frequencies: every rare term (a part
    // number, an error code) would weigh no more than "the".
    if bm25.modifier != Some(Modifier::Idf as i32) {
        return Err(format!(
            "declares the sparse vector {SPARSE:?} without the IDF modifier (its BM25 scores \
             would ignore how rare a term is)"
        ));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qdrant_client::qdrant::{SparseVectorConfig, SparseVectorParams, VectorParamsMap};

    fn params(distance: Distance, size: u64, bm25: Option<Option<Modifier>>) -> CollectionParams {
        let dense = VectorParamsBuilder::new(size, distance).build();
        CollectionParams {
            vectors_config: Some(qdrant_client::qdrant::VectorsConfig {
                config: Some(VectorsConfigKind::ParamsMap(VectorParamsMap {
                    map: [(DENSE.to_owned(), dense)].into(),
                })),
            }),
            sparse_vectors_config: bm25.map(|modifier| SparseVectorConfig {
                map: [(
                    SPARSE.to_owned(),
                    SparseVectorParams {
                        modifier: modifier.map(|m| m as i32),
                        ..Default::default()
                    },
                )]
                .into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_collection_is_checked_for_size_distance_and_the_bm25_idf_modifier() {
        let ok = params(Distance::Cosine, 384, Some(Some(Modifier::Idf)));
        assert_eq!(check_params(ok, 384), Ok(true));
        let before_hybrid = params(Distance::Cosine, 384, None);
        assert_eq!(check_params(before_hybrid, 384), Ok(false));
        let small = params(Distance::Cosine, 128, Some(Some(Modifier::Idf)));
        assert!(
            check_params(small, 384)
                .expect_err("refused")
                .contains("128-dimensional")
        );
        let dot = params(Distance::Dot, 384, Some(Some(Modifier::Idf)));
        assert!(
            check_params(dot, 384)
                .expect_err("refused")
                .contains("cosine")
        );
        for modifier in [None, Some(Modifier::None)] {
            let raw_tf = params(Distance::Cosine, 384, Some(modifier));
            assert!(
                check_params(raw_tf, 384)
                    .expect_err("refused")
                    .contains("IDF")
            );
        }
    }
}
