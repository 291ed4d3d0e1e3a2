//! The slaves' book: registration sends the init, the init reply decides ready or down, a
//! stage's answer reaches its waiting step, silence past the step timeout marks the slave
//! down, and an old link's messages are ignored.

use super::*;
use crate::multinode::wire;

fn set(timeout: Duration) -> SlaveSet {
    let facts = ModelFacts {
        model_name: "m".into(),
        num_layers: 4,
        hidden: 2,
        dtype: String::new(),
        block_size: 4,
    };
    let spec = SlaveSpec {
        addr: "10.0.0.2".parse().expect("ip"),
        stage: 1,
        layers: 2..4,
    };
    SlaveSet::new(vec![spec], facts, timeout)
}

fn init_reply(link: u64, layers: (u32, u32), error: &str) -> med::SlaveToMasterMsg {
    med::SlaveToMasterMsg {
        result: Some(med::slave_to_master_msg::Result::ExecuteResponse(
            med::ExecuteResponse {
                msg_type: med::ExecuteType::RemoteModelInit as i32,
                status: i32::from(!error.is_empty()),
                mindie_rs_stage_ready: Some(pl::StageReady {
                    first_layer: layers.0,
                    end_layer: layers.1,
                    kv_blocks: 10,
                    error: error.into(),
                    epoch: link,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

type Rx = tokio::sync::mpsc::UnboundedReceiver<Result<med::MasterToSlaveMsg, Status>>;

fn registered(s: &SlaveSet) -> (u64, Rx) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let link = s.attach(0, tx);
    let init = rx.try_recv().expect("init sent").expect("ok");
    let req = init.execute_request.expect("request");
    assert_eq!(req.execute_type, med::ExecuteType::RemoteModelInit as i32);
    let a = req.mindie_rs_stage_assignment.expect("assignment");
    assert_eq!(
        (a.first_layer, a.end_layer, a.num_layers, a.epoch),
        (2, 4, 4, link)
    );
    (link, rx)
}

#[test]
fn the_init_reply_decides_ready_or_down() {
    let s = set(Duration::from_secs(5));
    assert!(s
        .all_ready()
        .expect_err("waiting")
        .contains("has not registered"));
    let (link, _rx) = registered(&s);
    assert!(s.all_ready().expect_err("loading").contains("loading"));
    s.on_message(0, link, init_reply(link, (2, 3), ""));
    assert!(s
        .all_ready()
        .expect_err("wrong layers")
        .contains("instead of"));
    let (link, _rx) = registered(&s);
    s.on_message(0, link, init_reply(link, (2, 4), "out of memory"));
    assert!(s.all_ready().expect_err("failed").contains("out of memory"));
    let before = s.epoch();
    let (link, _rx) = registered(&s);
    // A reply naming another link (a stale one) is ignored.
    s.on_message(0, link, init_reply(link + 100, (2, 4), ""));
    assert!(s.all_ready().is_err());
    s.on_message(0, link, init_reply(link, (2, 4), ""));
    assert_eq!(s.all_ready(), Ok(()));
    assert_eq!(
        s.epoch(),
        before + 1,
        "a successful init starts a new KV epoch"
    );
    assert_eq!(s.min_kv_blocks(), Some(10));
    assert_eq!(s.views()[0].phase, Phase::Ready);
}

fn batch() -> crate::backend::StepBatch {
    crate::backend::StepBatch {
        tokens: vec![1],
        positions: vec![0],
        seqs: vec![crate::backend::SeqSlice {
            token_range: 0..1,
            context_len: 1,
            block_table: vec![0],
            want_logits: true,
        }],
    }
}

#[test]
fn a_stage_answer_reaches_its_step_and_silence_marks_the_slave_down() {
    let s = std::sync::Arc::new(set(Duration::from_millis(300)));
    let (link, mut rx) = registered(&s);
    s.on_message(0, link, init_reply(link, (2, 4), ""));
    let answer = s.clone();
    let slave = std::thread::spawn(move || {
        let msg = loop {
            if let Ok(m) = rx.try_recv() {
                break m.expect("ok");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let req = msg.execute_request.expect("request");
        let st = req.mindie_rs_stage_step.expect("step");
        let out: Vec<f32> = wire::bytes_f32(&st.hidden, 2)
            .expect("hidden")
            .iter()
            .map(|x| x * 2.0)
            .collect();
        let resp = med::ExecuteResponse {
            msg_type: med::ExecuteType::ModelInfer as i32,
            mindie_rs_stage_result: Some(pl::StageResult {
                step: st.step,
                hidden: wire::f32_bytes(&out),
            }),
            ..Default::default()
        };
        answer.on_message(
            0,
            link,
            med::SlaveToMasterMsg {
                result: Some(med::slave_to_master_msg::Result::ExecuteResponse(resp)),
                ..Default::default()
            },
        );
        rx
    });
    let req = wire::infer_request(&batch(), 7, s.epoch(), &[1.0, -2.0]).expect("encodes");
    assert_eq!(s.run_stage(0, 7, req, 2), Ok(vec![2.0, -4.0]));
    let _rx = slave.join().expect("slave thread");
    assert_eq!(s.traffic().stages, 1);
    assert_eq!(s.traffic().bytes_received, 8);

    // Nobody answers step 8: after the step timeout the slave is down, and stays so.
    let req = wire::infer_request(&batch(), 8, s.epoch(), &[1.0, -2.0]).expect("encodes");
    let err = s.run_stage(0, 8, req, 2).expect_err("times out");
    assert!(err.contains("no answer"), "{err}");
    assert!(s.all_ready().expect_err("down").contains("no answer"));
    // The dead link's late messages change nothing.
    s.on_message(0, link, init_reply(link, (2, 4), ""));
    assert!(s.all_ready().is_err());
    let req = wire::infer_request(&batch(), 9, s.epoch(), &[1.0, -2.0]).expect("encodes");
    assert!(
        s.run_stage(0, 9, req, 2).is_err(),
        "no step goes to a down slave"
    );
}
