//! `/v1/embeddings` in the llama-server shape, with deterministic unit vectors (same text,
//! same vector).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::{Sim, error_response, json_response, parse_request, splitmix64, unit_f64};

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: serde_json::Value,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Serialize)]
struct EmbeddingsUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    index: usize,
    object: &'static str,
}

/// embeddings-shape.txt's field order.
#[derive(Serialize)]
struct EmbeddingsResponse {
    model: String,
    object: &'static str,
    usage: EmbeddingsUsage,
    data: Vec<EmbeddingItem>,
}

pub(super) async fn embeddings(State(sim): State<Sim>, body: Bytes) -> Response {
    let request: EmbeddingsRequest = match parse_request(&body) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let inputs: Vec<String> = match request.input {
        serde_json::Value::String(s) => vec![s],
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "\"input\" must be a string or an array",
                "invalid_request_error",
            );
        }
    };
    let c = &sim.0.config;
    if !c.embed_delay.is_zero() {
        tokio::time::sleep(c.embed_delay).await;
    }
    let tokens: usize = inputs.iter().map(|s| s.len() / 4 + 1).sum();
    let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    let response = EmbeddingsResponse {
        model: request.model.unwrap_or_else(|| c.model.clone()),
        object: "list",
        usage: EmbeddingsUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
        data: inputs
            .iter()
            .enumerate()
            .map(|(index, text)| EmbeddingItem {
                embedding: unit_vector(text, c.embed_dim),
                index,
                object: "embedding",
            })
            .collect(),
    };
    match serde_json::to_string(&response) {
        Ok(s) => json_response(StatusCode::OK, s),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
            "server_error",
        ),
    }
}

/// A deterministic unit vector for `text`: same text, same vector.
pub fn unit_vector(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv1a(text.as_bytes());
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state = splitmix64(state);
            (unit_f64(state) * 2.0 - 1.0) as f32
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = unit_vector("hello", 384);
        assert_eq!(a.len(), 384);
        assert_eq!(a, unit_vector("hello", 384));
        assert_ne!(a, unit_vector("hellp", 384));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
