//! Every byte from the internet goes through here: any text must parse into a frame or give a
//! typed error with a bounded message, and an ask that parses must validate into a turn request
//! or a typed refusal — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ragchat::auth::Principal;
use ragchat::chat::TurnRequest;
use ragchat::chat::protocol::{ClientFrame, parse_client_frame};
use ragchat::error::ErrorCode;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_client_frame(&text) {
        Err(e) => {
            assert!(matches!(
                e.code,
                ErrorCode::BadRequest | ErrorCode::Unsupported
            ));
            assert!(e.message.len() < 2048);
        }
        Ok(ClientFrame::Ask(ask)) => {
            let round = serde_json::to_string(&ClientFrame::Ask(ask.clone())).expect("serialises");
            assert_eq!(
                parse_client_frame(&round).expect("round trip"),
                ClientFrame::Ask(ask.clone())
            );
            let limits = limits();
            for principal in [Principal::anonymous(), Principal::new("key", "fuzz")] {
                match TurnRequest::from_ask(ask.clone(), &limits, "socket", principal, 1_000) {
                    Ok(request) => {
                        assert!(!request.question.trim().is_empty());
                        assert!(request.question.chars().count() <= limits.max_question_chars);
                    }
                    Err((_, e)) => assert!(matches!(
                        e.code,
                        ErrorCode::BadRequest | ErrorCode::TooLarge
                    )),
                }
            }
        }
        Ok(_) => {}
    }
});

fn limits() -> ragchat::config::ChatConfig {
    ragchat::config::ChatConfig {
        test_mode: false,
        top_k: 4,
        max_question_chars: 4000,
        max_history_messages: 50,
        max_history_message_chars: 16_000,
        history_tokens: 512,
        system_prompt: None,
    }
}
