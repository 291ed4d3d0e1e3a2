//! Chat template tests: an HF-style tool-calling template checked against the output of Python
//! Jinja2 configured as `transformers` configures it (expected text generated once with
//! jinja2 3.1: `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`, loop
//! controls, `tojson` = `json.dumps(ensure_ascii=False)`), plus error paths.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::tests::load;
use super::*;

/// A template exercising namespace, slicing, `.strip()`, `.endswith()`, `.split()`, `.upper()`,
/// `tojson` (plain and indented), `raise_exception`, `is defined`, `loop.last`, filters, kwargs
/// and the whitespace rules.
const TOOL_TEMPLATE: &str = r##"{%- set ns = namespace(sys='', first=true) %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.sys = messages[0]['content'].strip() %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if tools %}
<|im_start|>system
{{ ns.sys }}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
Pretty: {{ tools[0].function.parameters | tojson(indent=2) }}<|im_end|>
{% elif ns.sys %}
<|im_start|>system
{{ ns.sys }}<|im_end|>
{% endif %}
{% for message in loop_messages %}
    {% if message.role not in ['user', 'assistant', 'tool'] %}
        {{ raise_exception('Unknown role: ' + message.role) }}
    {% endif %}
    {% if message.role == 'assistant' and message.tool_calls is defined %}
<|im_start|>assistant
{% if message.content %}{{ message.content | trim }}
{% endif %}
{% for tc in message.tool_calls %}
<tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>
{% endfor %}
<|im_end|>
    {% elif message.role == 'tool' %}
<|im_start|>tool [{{ message.tool_call_id }}]
{{ message.content }}<|im_end|>
    {% else %}
<|im_start|>{{ message.role }}{% if message.name is defined %} ({{ message.name }}){% endif %}

{{ message.content | replace('\t', ' ') }}{% if message.content.endswith('?') %} [q]{% endif %}<|im_end|>
    {% endif %}
    {% if loop.last and add_generation_prompt %}
<|im_start|>assistant
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>
{% endif %}
    {% endif %}
{% endfor %}
{{- bos_token ~ '|' ~ eos_token ~ '|' ~ (messages | length) ~ '|' ~ ('a,b'.split(',') | join('+')) ~ '|' ~ 'Title me'.upper() -}}
"##;

/// jinja2's rendering of [`TOOL_TEMPLATE`] over [`tool_chat`].
const TOOL_EXPECTED: &str = r##"<|im_start|>system
Be brief.

# Tools
<tools>{"type": "function", "function": {"name": "get_weather", "description": "Weather <now> & 'later'", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "units": {"enum": ["°C", "°F"]}}, "required": ["city"]}}}</tools>
Pretty: {
  "type": "object",
  "properties": {
    "city": {
      "type": "string"
    },
    "units": {
      "enum": [
        "°C",
        "°F"
      ]
    }
  },
  "required": [
    "city"
  ]
}<|im_end|>
<|im_start|>user (bob)
What's the weather in <Paris> & 'Nice'? Now? [q]<|im_end|>
<|im_start|>assistant
<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "units": "°C", "days": 2, "ratio": 0.5, "big": 1e+16, "tiny": 1e-07, "flags": [true, null]}}</tool_call>
<|im_end|>
<|im_start|>tool [c1]
{"temp": 21}<|im_end|>
<|im_start|>user
Thanks — 谢谢 🚀<|im_end|>
<|im_start|>assistant
<think>

</think>
<s>|</s>|5|a+b|TITLE ME"##;

/// A tokenizer with the tiny-qwen2 vocabulary and the given `tokenizer_config.json` (plus
/// other files).
fn with_files(files: &[(&str, &str)]) -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-qwen2");
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    Tokenizer::load(dir.path()).unwrap()
}

fn with_template(template: &str) -> Tokenizer {
    let cfg =
        json!({"chat_template": template, "bos_token": "<s>", "eos_token": {"content": "</s>"}});
    with_files(&[("tokenizer_config.json", &cfg.to_string())])
}

pub(super) fn without_template() -> Tokenizer {
    with_files(&[])
}

fn tool_chat() -> (Vec<ChatMessage>, Value) {
    let msgs = json!([
        {"role": "system", "content": "  Be brief.  "},
        {"role": "user", "content": [{"type": "text", "text": "What's the weather in <Paris> & 'Nice'?\tNow?"}], "name": "bob"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "get_weather",
            // OpenAI sends arguments as a JSON string; templates get the object
            "arguments": "{\"city\": \"Paris\", \"units\": \"°C\", \"days\": 2, \"ratio\": 0.5, \"big\": 1e16, \"tiny\": 1e-07, \"flags\": [true, null]}"
        }}]},
        {"role": "tool", "content": "{\"temp\": 21}", "tool_call_id": "c1"},
        {"role": "user", "content": "Thanks — 谢谢 🚀"}
    ]);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather <now> & 'later'",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "units": {"enum": ["°C", "°F"]}}, "required": ["city"]}}}]);
    let msgs = msgs
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::from_json(m).unwrap())
        .collect();
    (msgs, tools)
}

fn kwargs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn renders_like_python_jinja2() {
    let tok = with_template(TOOL_TEMPLATE);
    let (msgs, tools) = tool_chat();
    let kw = kwargs(json!({"enable_thinking": false}));
    let out = tok
        .render_chat(&msgs, true, Some(&tools), Some(&kw))
        .unwrap();
    assert_eq!(out, TOOL_EXPECTED);
}

#[test]
fn raise_exception_carries_the_template_message() {
    let tok = with_template(TOOL_TEMPLATE);
    let msgs = [ChatMessage::new("narrator", "once upon a time")];
    let e = tok.render_chat(&msgs, true, None, None).unwrap_err();
    match &e {
        TokenizerError::TemplateRaised(m) => assert_eq!(m, "Unknown role: narrator"),
        other => panic!("{other:?}"),
    }
    assert!(e.is_client_error());
}

#[test]
fn context_defaults_and_kwarg_precedence() {
    let tok = with_template(
        "{{ tools is none }}|{{ documents is none }}|{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ messages|length }}",
    );
    let msgs = [ChatMessage::new("user", "hi")];
    assert_eq!(
        tok.render_chat(&msgs, false, None, None).unwrap(),
        "True|True|<s>|</s>|False|1"
    );
    // kwargs may replace special tokens, never messages / tools / add_generation_prompt
    let kw = kwargs(
        json!({"bos_token": "B", "messages": [], "tools": [1], "add_generation_prompt": false}),
    );
    assert_eq!(
        tok.render_chat(&msgs, true, None, Some(&kw)).unwrap(),
        "True|True|B|</s>|True|1"
    );
}

#[test]
fn python_methods_and_whitespace_rules() {
    let tok = with_template(
        "{% for m in messages %}\n  {{ m.role.capitalize() }}: {{ m['content'].lstrip().replace('a', 'A') }}\n    {% if m.content.startswith(' ') %}\n(indented)\n    {% endif %}\n{% endfor %}\n",
    );
    let msgs = [
        ChatMessage::new("user", "  banana"),
        ChatMessage::new("assistant", "ok"),
    ];
    // lstrip_blocks removes the indentation before block tags, trim_blocks the newline after
    // them, and Jinja2 drops the template's final newline
    assert_eq!(
        tok.render_chat(&msgs, false, None, None).unwrap(),
        "  User: bAnAnA\n(indented)\n  Assistant: ok\n"
    );
}

#[test]
fn template_lists_pick_tool_use_with_tools() {
    let cfg = json!({"chat_template": [
        {"name": "default", "template": "D{{ messages[0].content }}"},
        {"name": "tool_use", "template": "T{{ tools|length }}"}
    ]});
    let tok = with_files(&[("tokenizer_config.json", &cfg.to_string())]);
    let msgs = [ChatMessage::new("user", "x")];
    assert_eq!(tok.render_chat(&msgs, true, None, None).unwrap(), "Dx");
    assert_eq!(
        tok.render_chat(&msgs, true, Some(&json!([1, 2])), None)
            .unwrap(),
        "T2"
    );
    assert_eq!(tok.chat_template_names(), ["default", "tool_use"]);

    let cfg = json!({"chat_template": [{"name": "rag", "template": "R"}]});
    let tok = with_files(&[("tokenizer_config.json", &cfg.to_string())]);
    let e = tok.render_chat(&msgs, true, None, None).unwrap_err();
    assert!(e.to_string().contains("rag"), "{e}");
}

#[test]
fn missing_and_broken_templates() {
    let tok = without_template();
    assert!(!tok.has_chat_template());
    let e = tok
        .render_chat(&[ChatMessage::new("user", "x")], true, None, None)
        .unwrap_err();
    assert!(matches!(e, TokenizerError::NoChatTemplate) && e.is_client_error());

    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-qwen2");
    std::fs::copy(
        src.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}oops",
    )
    .unwrap();
    let e = Tokenizer::load(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::TemplateSyntax { .. }), "{e}");
    assert!(e.to_string().contains("chat_template.jinja"), "{e}");

    // a runtime failure names the problem
    let tok = with_template("{{ messages[0].content + 1 }}");
    let e = tok
        .render_chat(&[ChatMessage::new("user", "x")], true, None, None)
        .unwrap_err();
    assert!(matches!(e, TokenizerError::TemplateRender(_)), "{e}");
}

#[test]
fn message_parsing() {
    let m = ChatMessage::from_json(&json!({"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "reasoning_content": "r"}))
    .unwrap();
    assert_eq!(m.content.as_deref(), Some("a\nb"));
    assert_eq!(m.extra.get("reasoning_content"), Some(&json!("r")));
    let tok = with_template("{{ messages[0].reasoning_content }}|{{ messages[0].content }}");
    assert_eq!(tok.render_chat(&[m], false, None, None).unwrap(), "r|a\nb");

    for bad in [
        json!({"content": "no role"}),
        json!({"role": 3, "content": "x"}),
        json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        json!({"role": "user", "content": [{"type": "text"}]}),
        json!({"role": "user", "content": 5}),
        json!(["not", "an", "object"]),
    ] {
        let e = ChatMessage::from_json(&bad).unwrap_err();
        assert!(matches!(e, TokenizerError::InvalidMessage(_)), "{bad}: {e}");
    }
    assert_eq!(join_text_parts(&json!(null)).unwrap(), None);
}

#[test]
fn fixture_templates_prefix_bos_only_for_llama() {
    let msgs = [ChatMessage::new("user", "hi")];
    let llama = load("tiny-llama")
        .render_chat(&msgs, false, None, None)
        .unwrap();
    assert_eq!(llama, "<|begin_of_text|><|im_start|>user\nhi<|im_end|>\n");
    let qwen = load("tiny-qwen2")
        .render_chat(&msgs, true, None, None)
        .unwrap();
    assert_eq!(
        qwen,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn strftime_now_is_available() {
    let tok =
        with_template("{% if strftime_now is defined %}{{ strftime_now('%Y')|length }}{% endif %}");
    assert_eq!(tok.render_chat(&[], false, None, None).unwrap(), "4");
}
