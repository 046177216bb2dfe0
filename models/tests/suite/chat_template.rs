//! Chat templates rendered by minijinja against transformers' `apply_chat_template`, string for
//! string (expected strings written by `fixtures/make_chat_template_fixtures.py`), and the
//! checkpoint files a template is read from.

use std::path::{Path, PathBuf};

use firempo_models::{ChatMessage, HfChatTemplate, PROMPT_FORMATS};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn renderings_equal_transformers_apply_chat_template() {
    let path = repo_root().join("models/tests/fixtures/chat_templates/expected.json");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let cases = expected["cases"].as_array().unwrap();
    let mut templates = std::collections::BTreeSet::new();
    for (i, case) in cases.iter().enumerate() {
        let file = case["template"].as_str().unwrap();
        templates.insert(file);
        let source = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let mut template = HfChatTemplate::new(&source, file).unwrap();
        template.bos_token = Some(case["bos_token"].as_str().unwrap().to_string());
        template.eos_token = Some(case["eos_token"].as_str().unwrap().to_string());
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let rendered = template.render(&messages, case["add_generation_prompt"].as_bool().unwrap());
        match (case["expected"].as_str(), case["error"].as_str()) {
            (Some(want), _) => assert_eq!(rendered.unwrap(), want, "case {i}: {file}"),
            (None, Some(error)) => {
                let err = rendered.unwrap_err().to_string();
                assert!(err.contains(error) && err.contains(file), "case {i}: {err}");
            }
            (None, None) => panic!("case {i} has neither `expected` nor `error`"),
        }
    }
    // Every named format is covered, plus the two fixture templates.
    for name in PROMPT_FORMATS {
        assert!(
            templates.contains(format!("models/src/templates/{name}.jinja").as_str()),
            "{name} has no expected renderings"
        );
    }
    assert_eq!(templates.len(), PROMPT_FORMATS.len() + 2, "{templates:?}");
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-chat-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn one_turn(template: &HfChatTemplate) -> String {
    template
        .render(&[ChatMessage::text("user", "Q")], true)
        .unwrap()
}

#[test]
fn the_checkpoint_template_is_read_from_each_file_transformers_reads() {
    let dir = scratch("files");
    let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
    assert!(HfChatTemplate::from_checkpoint(&dir).unwrap().is_none());

    // tokenizer_config.json: the list of named templates, `default` taken; tokens as
    // added-token objects.
    write(
        "tokenizer_config.json",
        serde_json::json!({
            "bos_token": {"content": "<s>", "special": true},
            "eos_token": "</s>",
            "chat_template": [
                {"name": "tool_use", "template": "tools"},
                {"name": "default", "template": "{{ bos_token }}config {{ messages[0].content }}{{ eos_token }}"},
            ],
        })
        .to_string(),
    );
    let template = HfChatTemplate::from_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(one_turn(&template), "<s>config Q</s>");
    assert!(template.origin().ends_with("tokenizer_config.json"));

    // processor_config.json wins over tokenizer_config.json, chat_template.json over both,
    // chat_template.jinja over all.
    write(
        "processor_config.json",
        serde_json::json!({"processor_class": "LlavaProcessor", "chat_template": "processor {{ messages[0].content }}"}).to_string(),
    );
    assert_eq!(
        one_turn(&HfChatTemplate::from_checkpoint(&dir).unwrap().unwrap()),
        "processor Q"
    );
    write(
        "chat_template.json",
        serde_json::json!({"chat_template": "json {{ messages[0].content }}"}).to_string(),
    );
    assert_eq!(
        one_turn(&HfChatTemplate::from_checkpoint(&dir).unwrap().unwrap()),
        "json Q"
    );
    write(
        "chat_template.jinja",
        "jinja {{ messages[0].content }}".into(),
    );
    let template = HfChatTemplate::from_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(one_turn(&template), "jinja Q");
    assert_eq!(template.eos_token.as_deref(), Some("</s>"));

    // A named format overrides the checkpoint's template and keeps its tokens.
    let named = HfChatTemplate::for_checkpoint(&dir, Some("mistral-instruct")).unwrap();
    assert_eq!(one_turn(&named), "<s>[INST] Q [/INST]");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_and_broken_templates_are_errors_that_say_what_to_do() {
    let dir = scratch("errors");
    let err = HfChatTemplate::for_checkpoint(&dir, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--prompt-format") && PROMPT_FORMATS.iter().all(|name| err.contains(name)),
        "{err}"
    );

    // A template that needs eos_token when the checkpoint names none.
    let template = HfChatTemplate::for_checkpoint(&dir, Some("llava-1.5")).unwrap();
    let err = template
        .render(
            &[
                ChatMessage::text("user", "Q"),
                ChatMessage::text("assistant", "A"),
            ],
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eos_token") && err.contains("tokenizer_config.json"),
        "{err}"
    );

    let config = dir.join("tokenizer_config.json");
    std::fs::write(
        &config,
        r#"{"chat_template": [{"name": "rag", "template": "x"}]}"#,
    )
    .unwrap();
    let err = HfChatTemplate::from_checkpoint(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json") && err.contains("`default`") && err.contains("rag"),
        "{err}"
    );
    std::fs::write(&config, r#"{"chat_template": "{% for m in messages %}"}"#).unwrap();
    let err = HfChatTemplate::from_checkpoint(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer_config.json"), "{err}");
    std::fs::write(&config, r#"{"chat_template": 3}"#).unwrap();
    let err = HfChatTemplate::from_checkpoint(&dir)
        .unwrap_err()
        .to_string();
    assert!(err.contains("field `chat_template`"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
