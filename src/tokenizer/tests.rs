//! Tests against the tiny real models in `tests/fixtures/`: every reference case's prompt ids,
//! rendered chat prompt, decoded text and logprob token texts/bytes; the incremental
//! detokenizer against full decodes (reference ids and a random-id fuzz); the pool's bounds.

use crate::engine::sampler::Rng; // seeded, so fuzz failures reproduce
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::*;

const MODELS: [(&str, &str); 4] = [
    ("tiny-llama", "tiny-llama"),
    ("tiny-llama-bf16", "tiny-llama"),
    ("tiny-qwen2", "tiny-qwen2"),
    ("tiny-qwen2-bf16", "tiny-qwen2"),
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(super) fn load(model: &str) -> Tokenizer {
    Tokenizer::load(&fixtures().join("models").join(model)).unwrap()
}

fn refs(name: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("refs").join(format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

fn cases(r: &Value) -> &Vec<Value> {
    r["cases"].as_array().unwrap()
}

fn messages(case: &Value) -> Vec<ChatMessage> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::from_json(m).unwrap())
        .collect()
}

/// Streams `ids` through a detokenizer; returns (deltas, finish).
fn stream(d: &mut Detokenizer, ids: &[u32]) -> (Vec<String>, String) {
    let deltas = ids.iter().map(|&id| d.push(id)).collect();
    (deltas, d.finish())
}

#[test]
fn prompts_encode_to_reference_ids() {
    for (model, r) in MODELS {
        let tok = load(model);
        let r = refs(r);
        let mut n = (0, 0);
        for case in cases(&r) {
            let want = ids(&case["prompt_ids"]);
            let name = case["name"].as_str().unwrap();
            match case["kind"].as_str().unwrap() {
                "completion" => {
                    let got = tok.encode(case["prompt"].as_str().unwrap(), true).unwrap();
                    assert_eq!(got, want, "{model}/{name}");
                    n.0 += 1;
                }
                "chat" => {
                    let text = tok.render_chat(&messages(case), true, None, None).unwrap();
                    assert_eq!(
                        text,
                        case["rendered_prompt"].as_str().unwrap(),
                        "{model}/{name}"
                    );
                    assert_eq!(tok.encode(&text, false).unwrap(), want, "{model}/{name}");
                    n.1 += 1;
                }
                other => panic!("unknown kind {other}"),
            }
        }
        assert!(n.0 >= 5 && n.1 >= 2, "{model}: {n:?}");
    }
}

#[test]
fn generated_ids_decode_to_reference_text() {
    for (model, r) in MODELS {
        let tok = load(model);
        for case in cases(&refs(r)) {
            let gen = ids(&case["generated_ids"]);
            let name = case["name"].as_str().unwrap();
            let skip = tok.decode(&gen, true).unwrap();
            assert_eq!(
                skip,
                case["generated_text_skip_special"].as_str().unwrap(),
                "{model}/{name}"
            );
            let all = tok.decode(&gen, false).unwrap();
            assert_eq!(
                all,
                case["generated_text"].as_str().unwrap(),
                "{model}/{name}"
            );
        }
    }
}

#[test]
fn detokenizer_streams_reference_ids_exactly() {
    let mut saw_special_difference = false;
    for (model, r) in MODELS {
        let tok = load(model);
        for case in cases(&refs(r)) {
            let gen = ids(&case["generated_ids"]);
            for skip in [true, false] {
                let mut d = Detokenizer::new(tok.clone(), skip);
                let mut deltas = Vec::new();
                for &id in &gen {
                    deltas.push(d.push(id));
                    // constant work per token: the decoded window stays a few ids long
                    assert!(d.window_len() <= 4, "{model}: window {}", d.window_len());
                }
                let tail = d.finish();
                let streamed = deltas.concat() + &tail;
                assert_eq!(
                    streamed,
                    tok.decode(&gen, skip).unwrap(),
                    "{model} skip={skip}"
                );
                // in context of the prompt, byte-level BPE gives the same text
                let prompt = ids(&case["prompt_ids"]);
                let mut d = Detokenizer::with_prompt(tok.clone(), skip, &prompt);
                let (deltas, tail) = stream(&mut d, &gen);
                assert_eq!(deltas.concat() + &tail, streamed, "{model} with prompt");
            }
            saw_special_difference |= case["generated_text"] != case["generated_text_skip_special"];
        }
    }
    assert!(
        saw_special_difference,
        "refs should exercise skip_special_tokens"
    );
}

#[test]
fn token_text_and_bytes_match_reference_top_logprobs() {
    let mut checked = 0;
    let mut partial_chars = 0;
    for (model, r) in MODELS {
        let tok = load(model);
        for case in cases(&refs(r)) {
            for step in case["steps"].as_array().unwrap() {
                let id = u32::try_from(step["id"].as_u64().unwrap()).unwrap();
                assert_eq!(
                    tok.token_text(id).as_deref(),
                    step["text"].as_str(),
                    "{model} id {id}"
                );
                for top in step["top"].as_array().unwrap() {
                    let id = u32::try_from(top["id"].as_u64().unwrap()).unwrap();
                    let text = top["text"].as_str().unwrap();
                    let bytes: Vec<u8> = top["bytes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
                        .collect();
                    assert_eq!(tok.token_text(id).as_deref(), Some(text), "{model} id {id}");
                    assert_eq!(tok.token_bytes(id), Some(bytes.clone()), "{model} id {id}");
                    partial_chars += usize::from(std::str::from_utf8(&bytes).is_err());
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked > 1000 && partial_chars > 10,
        "{checked} {partial_chars}"
    );
}

#[test]
fn model_facts() {
    for (model, r) in MODELS {
        let tok = load(model);
        let r = refs(r);
        assert_eq!(
            tok.eos_token_ids(),
            ids(&r["eos_token_ids"]).as_slice(),
            "{model}"
        );
        assert_eq!(tok.vocab_size(), 2008);
        assert!(tok.has_chat_template());
        assert_eq!(tok.eos_token(), Some("<|im_end|>"));
        for id in 2000..2008 {
            assert!(tok.is_special(id), "{model} {id}");
        }
        assert!(!tok.is_special(518));
        assert_eq!(tok.token_text(2048), None);
        assert_eq!(tok.token_bytes(5000), None);
        assert_eq!(tok.token_to_id("<|im_start|>"), Some(2001));
        assert_eq!(tok.decode(&[2050, 9999], false).unwrap(), "");
    }
    let llama = load("tiny-llama");
    assert_eq!(llama.bos_token(), Some("<|begin_of_text|>"));
    assert_eq!(llama.add_bos_token(), Some(true));
    assert_eq!(llama.encode("", true).unwrap(), vec![2003]);
    let qwen = load("tiny-qwen2");
    assert_eq!(qwen.bos_token(), None);
    assert_eq!(qwen.encode("", true).unwrap(), Vec::<u32>::new());
}

/// Ids whose raw bytes are one byte ≥ 0x80: the pieces of multi-byte characters.
fn high_byte_ids(tok: &Tokenizer) -> Vec<u32> {
    (0..tok.vocab_size() as u32)
        .filter(|&id| matches!(tok.token_bytes(id).as_deref(), Some([b]) if *b >= 0x80))
        .collect()
}

#[test]
fn detokenizer_fuzz_equals_full_decode() {
    let words = [
        "héllo", " 你好", "🚀", " мир", "—", " naïve", "x", "\n", " café", "ß",
    ];
    for model in ["tiny-llama", "tiny-qwen2"] {
        let tok = load(model);
        let high = high_byte_ids(&tok);
        assert!(high.len() > 100, "{model}: {}", high.len());
        let vocab = tok.vocab_size();
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        for case in 0..300 {
            // Mix: random ids, runs of high bytes, and encoded multi-byte text.
            let mut seq = Vec::new();
            for _ in 0..(1 + rng.below(40)) {
                match rng.below(4) {
                    0 => seq.push(rng.below(vocab) as u32),
                    1 => seq.push(high[rng.below(high.len())]),
                    2 => {
                        let w = words[rng.below(words.len())];
                        seq.extend(tok.encode(w, false).unwrap());
                    }
                    _ => seq.push(2000 + rng.below(8) as u32),
                }
            }
            let skip = case % 2 == 0;
            let full = tok.decode(&seq, skip).unwrap();
            let mut d = Detokenizer::new(tok.clone(), skip);
            let (deltas, tail) = stream(&mut d, &seq);
            assert_eq!(
                deltas.concat() + &tail,
                full,
                "{model} case {case}: {seq:?}"
            );
        }
    }
}

#[test]
fn detokenizer_holds_split_characters() {
    let tok = load("tiny-llama");
    let text = "你好🚀";
    let ids = tok.encode(text, false).unwrap();
    assert!(
        ids.len() > 3,
        "expected the characters to be split: {ids:?}"
    );
    let mut d = Detokenizer::new(tok.clone(), true);
    let (deltas, tail) = stream(&mut d, &ids);
    assert!(deltas.iter().all(|s| !s.contains('\u{FFFD}')), "{deltas:?}");
    assert_eq!(tail, "");
    assert_eq!(deltas.concat(), text);
    // cut before the last byte: the incomplete character only appears at finish
    let mut d = Detokenizer::new(tok.clone(), true);
    let (deltas, tail) = stream(&mut d, &ids[..ids.len() - 1]);
    assert!(!deltas.concat().contains('\u{FFFD}'));
    assert_eq!(tail, "\u{FFFD}");
}

#[test]
fn detokenizer_window_stays_bounded_on_garbage() {
    let tok = load("tiny-qwen2");
    // lead byte 0xE4 repeated: every decode ends in U+FFFD, forever
    let lead = (0..tok.vocab_size() as u32)
        .find(|&id| tok.token_bytes(id).as_deref() == Some(&[0xE4]))
        .unwrap();
    let seq = vec![lead; 500];
    let mut d = Detokenizer::new(tok.clone(), false);
    let mut out = String::new();
    for &id in &seq {
        out += &d.push(id);
        assert!(
            d.window_len() <= 2 * detok::MAX_PENDING + 1,
            "{}",
            d.window_len()
        );
    }
    out += &d.finish();
    assert_eq!(out, tok.decode(&seq, false).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_encodes_and_renders_like_the_tokenizer() {
    let tok = load("tiny-llama");
    let pool = TokenizerPool::new(tok.clone(), 2, DEFAULT_ENCODE_TIMEOUT);
    let r = refs("tiny-llama");
    for case in cases(&r) {
        let want = ids(&case["prompt_ids"]);
        if case["kind"] == "completion" {
            let text = case["prompt"].as_str().unwrap().to_string();
            assert_eq!(pool.encode(text, true).await.unwrap(), want);
        } else {
            let p = pool
                .render_and_encode_chat(messages(case), true, None, None)
                .await
                .unwrap();
            assert_eq!(p.ids, want);
            assert_eq!(p.text, case["rendered_prompt"].as_str().unwrap());
        }
    }
    let gen = ids(&cases(&r)[0]["generated_ids"]);
    assert_eq!(
        pool.decode(gen.clone(), true).await.unwrap(),
        tok.decode(&gen, true).unwrap()
    );
    let no_template = TokenizerPool::new(
        super::chat_tests::without_template(),
        1,
        DEFAULT_ENCODE_TIMEOUT,
    );
    let e = no_template
        .render_and_encode_chat(vec![ChatMessage::new("user", "hi")], true, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, TokenizerError::NoChatTemplate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_bounds_concurrency_and_times_out() {
    let pool = TokenizerPool::new(load("tiny-qwen2"), 2, Duration::from_secs(5));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut jobs = Vec::new();
    for _ in 0..8 {
        let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
        jobs.push(tokio::spawn(async move {
            pool.run_for_test(move |_| {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(50));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            })
            .await
        }));
    }
    for j in jobs {
        j.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);

    // A job that blocks until released: the caller gets Timeout, the job keeps its permit.
    let slow = TokenizerPool::new(load("tiny-qwen2"), 1, Duration::from_millis(50));
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let done = Arc::new(AtomicUsize::new(0));
    let done_in_job = done.clone();
    let e = slow
        .run_for_test(move |_| {
            let _ = wait.recv_timeout(Duration::from_secs(10));
            done_in_job.store(1, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(e, TokenizerError::Timeout(_)), "{e}");
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the caller did not wait for the job"
    );
    // the only permit is still held: the next call waits for it, then times out too
    let e = slow.encode("x".into(), false).await.unwrap_err();
    assert!(matches!(e, TokenizerError::Timeout(_)), "{e}");
    release.send(()).unwrap();
    let mut ok = None;
    for _ in 0..200 {
        if let Ok(ids) = slow.encode("x".into(), false).await {
            ok = Some(ids);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ok.map(|ids| ids.len()),
        Some(1),
        "permit not returned after the job ended"
    );
    assert_eq!(done.load(Ordering::SeqCst), 1);

    slow.close();
    let e = slow.encode("x".into(), false).await.unwrap_err();
    assert!(matches!(e, TokenizerError::PoolUnavailable(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_threads_are_fixed_and_survive_a_panicking_job() {
    let pool = TokenizerPool::new(load("tiny-qwen2"), 3, Duration::from_secs(5));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let mut jobs = Vec::new();
    for i in 0..300 {
        let (pool, seen) = (pool.clone(), seen.clone());
        jobs.push(tokio::spawn(async move {
            pool.run_for_test(move |t| {
                let me = std::thread::current();
                assert!(me.name().unwrap_or("").starts_with("mindie-tok-"));
                seen.lock().unwrap().insert(me.id());
                t.encode(&format!("hello {i}"), false)
            })
            .await
        }));
    }
    for j in jobs {
        assert!(!j.await.unwrap().unwrap().is_empty());
    }
    // 300 jobs, spread over time, ran on the pool's three threads and no others
    let threads = seen.lock().unwrap().len();
    assert!((1..=3).contains(&threads), "{threads} threads ran the jobs");

    let e = pool
        .run_for_test(|_| -> Result<(), TokenizerError> { panic!("a job that panics") })
        .await
        .unwrap_err();
    assert!(matches!(e, TokenizerError::PoolUnavailable(_)), "{e}");
    // every thread still serves, and the panicked job's permit came back
    for _ in 0..6 {
        assert_eq!(pool.encode("x".into(), false).await.unwrap().len(), 1);
    }
}

/// A SentencePiece-style (LLaMA-2 layout) tokenizer: `▁` for spaces, `<0xAB>` byte fallback,
/// a decoder that strips the first leading space.
fn spm_tokenizer() -> Tokenizer {
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": {"<unk>": 0, "<s>": 1, "<0xE4>": 2, "<0xBD>": 3, "<0xA0>": 4, "▁": 5,
                      "H": 6, "i": 7, "▁H": 8, "▁Hi": 9},
            "merges": [["▁", "H"], ["▁H", "i"]]}
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
    Tokenizer::load(dir.path()).unwrap()
}

#[test]
fn sentencepiece_style_bytes_and_leading_space() {
    let tok = spm_tokenizer();
    assert_eq!(tok.encode("Hi Hi", true).unwrap(), vec![1, 9, 9]);
    let you = tok.encode("你", false).unwrap();
    assert_eq!(you, vec![5, 2, 3, 4]);
    assert_eq!(tok.decode(&you, false).unwrap(), "你");
    assert_eq!(tok.token_bytes(2), Some(vec![0xE4]));
    assert_eq!(tok.token_text(2).as_deref(), Some("\u{FFFD}"));
    assert_eq!(tok.token_bytes(9), Some(b"Hi".to_vec()));

    // streamed on its own: the first token's space is dropped, as in decode(generated)
    let gen = [9, 9, 5, 2, 3, 4, 9];
    let full = tok.decode(&gen, false).unwrap();
    assert_eq!(full, "Hi Hi 你 Hi");
    let mut d = Detokenizer::new(tok.clone(), false);
    let (deltas, tail) = stream(&mut d, &gen);
    assert!(deltas.iter().all(|s| !s.contains('\u{FFFD}')), "{deltas:?}");
    assert_eq!(deltas.concat() + &tail, full);
    // after a prompt, the first generated token keeps its space (text of prompt + completion)
    let mut d = Detokenizer::with_prompt(tok.clone(), false, &[1, 9]);
    let (deltas, tail) = stream(&mut d, &gen);
    assert_eq!(deltas.concat() + &tail, " Hi Hi 你 Hi");
}
