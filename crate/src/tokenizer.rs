//! Tokenizer (`tokenizer.json` via the `tokenizers` crate) and chat template (Jinja via `minijinja`,
//! configured like transformers' `apply_chat_template`: trim_blocks, lstrip_blocks, loop controls,
//! `raise_exception`, Python-style `tojson`, Python string methods). The template comes from the
//! model directory; no model's format is hard-coded.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, Value as JValue};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::json_file::read_json;

/// One chat message. `content` is either plain text or a list of parts (text and image placeholders),
/// the shape transformers' processors accept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    Image,
}

impl Message {
    pub fn text(role: &str, text: &str) -> Self {
        Self { role: role.into(), content: Content::Text(text.into()) }
    }
    /// The message with a content of text parts only turned into one string, the parts joined with no
    /// separator (what templates that accept both forms print for either). Content with images is kept.
    pub fn text_parts_joined(&self) -> Message {
        match &self.content {
            Content::Parts(parts) if parts.iter().all(|p| matches!(p, Part::Text { .. })) => {
                let text = parts.iter().map(|p| if let Part::Text { text } = p { text.as_str() } else { "" }).collect();
                Message { role: self.role.clone(), content: Content::Text(text) }
            }
            _ => self.clone(),
        }
    }

    /// The message's texts: its content string or its text parts.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let (whole, parts) = match &self.content {
            Content::Text(t) => (Some(t.as_str()), &[][..]),
            Content::Parts(p) => (None, p.as_slice()),
        };
        whole.into_iter().chain(parts.iter().filter_map(|p| if let Part::Text { text } = p { Some(text.as_str()) } else { None }))
    }

    /// The message with each text replaced by `f(text)`.
    pub fn map_texts(&self, mut f: impl FnMut(&str) -> String) -> Message {
        let content = match &self.content {
            Content::Text(t) => Content::Text(f(t)),
            Content::Parts(parts) => Content::Parts(
                parts.iter().map(|p| if let Part::Text { text } = p { Part::Text { text: f(text) } } else { p.clone() }).collect(),
            ),
        };
        Message { role: self.role.clone(), content }
    }

    /// Number of image parts.
    pub fn image_count(&self) -> usize {
        match &self.content {
            Content::Text(_) => 0,
            Content::Parts(p) => p.iter().filter(|p| matches!(p, Part::Image)).count(),
        }
    }
}

/// A chat template and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    pub source: String,
    pub template: String,
}

impl ChatTemplate {
    /// Finds the template in a model directory: `chat_template.jinja`, then `chat_template.json`,
    /// then `tokenizer_config.json` (a string, or a list of named templates: "default" or the first).
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let template = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            return Ok(Some(Self { source: jinja.display().to_string(), template }));
        }
        for file in ["chat_template.json", "tokenizer_config.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let json = read_json(&path)?;
            match json.get("chat_template") {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return Ok(Some(Self { source: path.display().to_string(), template: s.clone() })),
                Some(Value::Array(list)) => {
                    let named = |n: &str| list.iter().find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n));
                    let pick = named("default").or_else(|| list.first());
                    if let Some(t) = pick.and_then(|t| t.get("template")).and_then(|t| t.as_str()) {
                        return Ok(Some(Self { source: path.display().to_string(), template: t.to_string() }));
                    }
                }
                Some(_) => {}
            }
            return Err(Error::ModelConfig { path, key: "chat_template".into(), message: "expected a string or a list of {name, template}".into() });
        }
        Ok(None)
    }

    /// Renders the template like `apply_chat_template(messages, add_generation_prompt=...)`.
    /// `extra` adds variables (e.g. `{"enable_thinking": false}`, `{"bos_token": "..."}`).
    ///
    /// minijinja compiles and evaluates an expression recursively, so a long operator or filter chain
    /// (`{{ 1 + 1 + … }}`, `x|e|e|…`: 40 KB of them) nests as deep as it is long and would overflow the caller's
    /// stack, aborting the process. The template therefore runs on a thread of its own whose stack grows with
    /// the template's length, and templates past [`TEMPLATE_MAX_BYTES`] are refused.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool, extra: &serde_json::Map<String, Value>) -> Result<String> {
        if self.template.len() > TEMPLATE_MAX_BYTES {
            return Err(Error::ChatTemplate {
                source_name: self.source.clone(),
                message: format!("the template is {} bytes, more than the {TEMPLATE_MAX_BYTES} a chat template may have", self.template.len()),
            });
        }
        let stack = TEMPLATE_STACK_BASE + TEMPLATE_STACK_PER_BYTE * self.template.len();
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("chat-template".into())
                .stack_size(stack)
                .spawn_scoped(scope, || self.render_here(messages, add_generation_prompt, extra))
                .map_err(|e| Error::Internal(format!("cannot start the chat template's thread: {e}")))?
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    fn render_here(&self, messages: &[Message], add_generation_prompt: bool, extra: &serde_json::Map<String, Value>) -> Result<String> {
        let err = |e: minijinja::Error| Error::ChatTemplate { source_name: self.source.clone(), message: describe(&e) };
        let mut env = Environment::new();
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(err)?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<JValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // A model directory's template is code from elsewhere: bound its work, depth and output so a
        // runaway one fails with this error instead of hanging the engine or exhausting its stack.
        let messages = serde_json::to_value(messages).map_err(|e| Error::Internal(e.to_string()))?;
        let messages_len = messages.to_string().len();
        let fuel = TEMPLATE_FUEL_BASE + messages_len as u64 / TEMPLATE_MESSAGE_BYTES_PER_FUEL;
        env.set_fuel(Some(fuel));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        let tmpl = env.template_from_str(&self.template).map_err(err)?;
        let mut ctx = serde_json::Map::new();
        let max_output = 2 * messages_len + TEMPLATE_OUTPUT_SLACK;
        ctx.insert("messages".into(), messages);
        ctx.insert("add_generation_prompt".into(), Value::Bool(add_generation_prompt));
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        let mut out = BoundedOutput { text: Vec::new(), max: max_output };
        let rendered = tmpl.render_captured_to(JValue::from(minijinja::value::Serde(&ctx)), &mut out).map(drop);
        match rendered {
            Ok(()) => String::from_utf8(out.text).map_err(|e| Error::Internal(format!("template output is not UTF-8: {e}"))),
            Err(e) if e.kind() == ErrorKind::WriteFailure => Err(Error::ChatTemplate {
                source_name: self.source.clone(),
                message: format!("the template wrote more than {max_output} bytes (twice its messages plus {TEMPLATE_OUTPUT_SLACK})"),
            }),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::ChatTemplate {
                source_name: self.source.clone(),
                message: format!(
                    "the template ran out of its budget of {fuel} steps (every {MINIJINJA_BYTES_PER_FUEL} bytes of text or list it builds count as a step)"
                ),
            }),
            Err(e) => Err(err(e)),
        }
    }
}

/// A rendering's budget in minijinja's fuel: one per instruction, and one per 64 bytes of strings, list
/// slots and output the template makes. So it bounds memory too (a string doubled in a loop is refused
/// once it outgrows what is left), at about 64 bytes a unit: 256 MB, plus 16 bytes per byte of messages
/// for templates whose work grows with the conversation. Real chat templates need a few thousand steps per
/// message and a few passes over its text.
const TEMPLATE_FUEL_BASE: u64 = 4_000_000;
const TEMPLATE_MESSAGE_BYTES_PER_FUEL: u64 = 4;
/// What minijinja 3.1 charges a fuel for besides an instruction (`UNITS_PER_FUEL` in its `vm/fuel.rs`).
const MINIJINJA_BYTES_PER_FUEL: u64 = 64;
/// Nested calls (macros, includes) a template may make.
const TEMPLATE_RECURSION: usize = 64;
/// Output a template may write beyond twice its messages' JSON (turn markers, system preambles, tools).
const TEMPLATE_OUTPUT_SLACK: usize = 1 << 20;
/// Longest chat template accepted (real ones are a few KB to a few tens of KB).
pub const TEMPLATE_MAX_BYTES: usize = 1 << 20;
/// Stack of the rendering thread: a base plus this much per byte of template. The deepest chains measured
/// (`x|e|e|…`, `x.a.a…`) take about 105 bytes of stack per template byte in a release build; 256 leaves room.
/// Unoptimized and sanitizer builds (the fuzz targets) have far larger frames. Only the pages a template
/// touches are committed.
const TEMPLATE_STACK_BASE: usize = 8 << 20;
const TEMPLATE_STACK_PER_BYTE: usize = if cfg!(debug_assertions) { 2048 } else { 256 };

/// A template's output buffer that refuses to grow past `max` bytes.
struct BoundedOutput {
    text: Vec<u8>,
    max: usize,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.max {
            return Err(std::io::Error::other("template output limit"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error and its causes on one line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`, i.e. Python's
/// separators (", " and ": "), no HTML escaping.
fn tojson(value: JValue, kwargs: minijinja::value::Kwargs) -> std::result::Result<JValue, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    // The indent is repeated before minijinja's budget sees the result: a huge one must not allocate.
    if let Some(n) = indent.filter(|&n| n > TOJSON_MAX_INDENT) {
        return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: indent {n} is more than {TOJSON_MAX_INDENT}")));
    }
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut out = String::new();
    python_json(&json, indent, 0, &mut out);
    Ok(JValue::from_safe_string(out))
}

const TOJSON_MAX_INDENT: usize = 64;

fn python_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                python_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        Value::Object(m) if !m.is_empty() => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push_str(": ");
                python_json(x, indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// `strftime_now(fmt)` for templates that print today's date (UTC; %Y %m %d %B %b %H %M %S %%).
fn strftime_now(fmt: String) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let name = MONTHS[(month - 1) as usize];
    let tod = secs % 86_400;
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(name),
            Some('b') => out.push_str(&name[..3]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tokenizer.json` plus the chat template and the special-token strings templates expect.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    template: Option<ChatTemplate>,
    /// Variables from `tokenizer_config.json` passed to the template (bos_token, eos_token, ...).
    template_vars: serde_json::Map<String, Value>,
    /// See [`set_text_content_as_string`](Self::set_text_content_as_string).
    text_content_as_string: bool,
    /// Added (special and user-defined) tokens: their text is their content, not vocabulary pieces.
    added: std::collections::HashMap<u32, String>,
    /// The added tokens marked special (turn markers and the like).
    special: std::collections::HashSet<u32>,
    /// Finds those tokens' strings in text (pattern i is `special_strings[i]`), longest first.
    special_finder: aho_corasick::AhoCorasick,
    special_strings: Vec<String>,
    /// The decoder maps byte-level characters (GPT-2's table) back to bytes.
    byte_level: bool,
}

impl Tokenizer {
    /// Loads `tokenizer.json` and the chat template of a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let mut tok = Self::from_file(&path)?;
        tok.template = ChatTemplate::from_dir(dir)?;
        let cfg_path = dir.join("tokenizer_config.json");
        if cfg_path.is_file() {
            let cfg = read_json(&cfg_path)?;
            for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
                // Either a string or an AddedToken dict with "content".
                let s = match cfg.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                    _ => None,
                };
                if let Some(s) = s {
                    tok.template_vars.insert(key.into(), Value::String(s));
                }
            }
        }
        Ok(tok)
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found")));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer { path: path.to_path_buf(), message: e.to_string() })?;
        let decoder = inner.get_added_tokens_decoder();
        let special = decoder.iter().filter(|(_, t)| t.special).map(|(&id, _)| id).collect();
        let special_strings: Vec<String> = decoder.values().filter(|t| t.special).map(|t| t.content.clone()).collect();
        let special_finder = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostLongest)
            .build(&special_strings)
            .map_err(|e| Error::Tokenizer { path: path.to_path_buf(), message: format!("special tokens: {e}") })?;
        let added = decoder.into_iter().map(|(id, t)| (id, t.content)).collect();
        let byte_level = matches!(inner.get_decoder(), Some(tokenizers::decoders::DecoderWrapper::ByteLevel(_)));
        Ok(Self { inner, path: path.to_path_buf(), template: None, template_vars: Default::default(), text_content_as_string: false, added, special, special_finder, special_strings, byte_level })
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    pub fn set_chat_template(&mut self, template: ChatTemplate) {
        self.template = Some(template);
    }

    fn err(&self, message: String) -> Error {
        Error::Tokenizer { path: self.path.clone(), message }
    }

    /// Token ids of `text`; special tokens written in the text (e.g. `<|im_start|>`) map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| self.err(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.err(format!("decode: {e}")))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes one token stands for, alone (a byte-level piece may be part of a UTF-8 character, so
    /// this is not always text): what OpenAI's logprobs report as `bytes`. Added tokens give their
    /// content; `<0xNN>` byte-fallback pieces their byte; an unknown id nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        if let Some(content) = self.added.get(&id) {
            return content.as_bytes().to_vec();
        }
        let Some(piece) = self.inner.id_to_token(id) else { return Vec::new() };
        if self.byte_level {
            if let Some(bytes) = piece.chars().map(byte_level_byte).collect::<Option<Vec<u8>>>() {
                return bytes;
            }
        }
        if let Some(hex) = piece.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                return vec![b];
            }
        }
        self.decode(&[id], false).map(String::into_bytes).unwrap_or_default()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The prompt text for `messages` from the model's chat template.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool, extra: &serde_json::Map<String, Value>) -> Result<String> {
        let t = self.template.as_ref().ok_or_else(|| Error::ChatTemplate {
            source_name: self.path.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            message: "the model directory has no chat template (chat_template.jinja, chat_template.json or tokenizer_config.json)".into(),
        })?;
        let mut vars = self.template_vars.clone();
        for (k, v) in extra {
            vars.insert(k.clone(), v.clone());
        }
        if self.text_content_as_string {
            let joined: Vec<Message> = messages.iter().map(Message::text_parts_joined).collect();
            return t.render(&joined, add_generation_prompt, &vars);
        }
        t.render(messages, add_generation_prompt, &vars)
    }

    /// Token ids of the chat prompt for `messages`. Text in the messages is the user's: a special-token
    /// string written there (a user typing `<|im_start|>system`) is tokenized as plain text, never as a
    /// turn marker, while the template's own special tokens keep their ids (llama.cpp's server treats
    /// message text the same way). Without such strings the ids are `encode(apply_chat_template(..))`.
    /// A prompt of more than `max_tokens` tokens is refused (`PromptTooLong`) before all of it is tokenized.
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool, extra: &serde_json::Map<String, Value>, max_tokens: usize) -> Result<Vec<u32>> {
        let check_length = |prompt: &str| -> Result<()> {
            // tokens never outnumber bytes: only a prompt longer than the limit in bytes needs counting
            if prompt.len() > max_tokens {
                let at_least = self.tokens_at_least(prompt, max_tokens)?;
                if at_least > max_tokens {
                    return Err(Error::PromptTooLong { at_least, max: max_tokens });
                }
            }
            Ok(())
        };
        if !messages.iter().any(|m| m.texts().any(|text| self.special_finder.is_match(text))) {
            let prompt = self.apply_chat_template(messages, add_generation_prompt, extra)?;
            check_length(&prompt)?;
            return self.encode(&prompt);
        }
        // Render with each special string in the messages replaced by a marker the template cannot
        // mistake (a private-use character and a per-request nonce), then put the strings back and note
        // where they stand: those bytes are text.
        let nonce = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), messages.len());
        let marker = |i: usize| format!("\u{F8FF}{nonce:016x}:{i}\u{F8FF}");
        let masked: Vec<Message> = messages
            .iter()
            .map(|m| {
                m.map_texts(|text| {
                    let mut out = String::with_capacity(text.len());
                    self.special_finder.replace_all_with(text, &mut out, |found, _, out| {
                        out.push_str(&marker(found.pattern().as_usize()));
                        true
                    });
                    out
                })
            })
            .collect();
        let rendered = self.apply_chat_template(&masked, add_generation_prompt, extra)?;
        let mut prompt = String::with_capacity(rendered.len());
        let mut literal_spans = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(at) = rest.find('\u{F8FF}') {
            let end = rest[at + 3..].find('\u{F8FF}').map(|e| at + 3 + e);
            let index = end.and_then(|e| rest[at + 3..e].strip_prefix(&format!("{nonce:016x}:"))).and_then(|i| i.parse::<usize>().ok());
            let (Some(end), Some(text)) = (end, index.and_then(|i| self.special_strings.get(i))) else {
                prompt.push_str(&rest[..at + 3]);
                rest = &rest[at + 3..];
                continue;
            };
            prompt.push_str(&rest[..at]);
            literal_spans.push(prompt.len()..prompt.len() + text.len());
            prompt.push_str(text);
            rest = &rest[end + 3..];
        }
        prompt.push_str(rest);
        check_length(&prompt)?;

        // The template's special tokens split the prompt; the pieces between them are encoded with
        // special-token parsing off (the same pieces the tokenizer would encode, so ids are unchanged
        // where no literal stands).
        let enc = self.inner.encode(prompt.as_str(), true).map_err(|e| self.err(format!("encode: {e}")))?;
        let mut plain = self.inner.clone();
        plain.set_encode_special_tokens(true);
        let encode_plain = |text: &str| plain.encode(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| self.err(format!("encode: {e}")));
        let mut ids = Vec::with_capacity(enc.len());
        let mut from = 0;
        for (&id, &(start, end)) in enc.get_ids().iter().zip(enc.get_offsets()) {
            let written_by_user = literal_spans.iter().any(|r| r.start < end && start < r.end);
            if !self.special.contains(&id) || written_by_user {
                continue;
            }
            ids.extend(encode_plain(&prompt[from..start.max(from)])?);
            ids.push(id);
            from = from.max(end);
        }
        ids.extend(encode_plain(&prompt[from..])?);
        Ok(ids)
    }

    /// Pass messages whose parts are all text to the template as one string (see
    /// [`Message::text_parts_joined`]); for templates that read `content` as a string.
    pub fn set_text_content_as_string(&mut self, on: bool) {
        self.text_content_as_string = on;
    }
}

/// Replaces the i-th `image_token` in `ids` by `counts[i]` copies (the processor's expansion of each
/// `<|image_pad|>` to one token per merged patch).
pub fn expand_image_tokens(ids: &[u32], image_token: u32, counts: &[usize]) -> Result<Vec<u32>> {
    let found = ids.iter().filter(|&&t| t == image_token).count();
    if found != counts.len() {
        return Err(Error::invalid("images", format!("the prompt has {found} image placeholders but {} images were given", counts.len())));
    }
    let mut out = Vec::with_capacity(ids.len() + counts.iter().sum::<usize>());
    let mut next = counts.iter();
    for &t in ids {
        if t == image_token {
            out.extend(std::iter::repeat_n(image_token, *next.next().unwrap_or(&1)));
        } else {
            out.push(t);
        }
    }
    Ok(out)
}

/// The byte a character of GPT-2's byte-level alphabet stands for. The `tokenizers` crate keeps its
/// table private, so the mapping is restated here: printable Latin-1 bytes stand for themselves, the
/// other 68 bytes (controls, space, 0x7F–0xA0, soft hyphen) are shifted to U+0100 onwards, in order.
fn byte_level_byte(c: char) -> Option<u8> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let code = c as u32;
    if printable(code) {
        return Some(code as u8);
    }
    let shifted = code.checked_sub(0x100)? as usize;
    (0u32..=0xFF).filter(|b| !printable(*b)).nth(shifted).map(|b| b as u8)
}

/// Turns generated ids into text deltas, holding back bytes of an unfinished UTF-8 character.
pub struct StreamDecoder {
    ids: Vec<u32>,
    /// Start of the window that is re-decoded each step (a few tokens of left context keep
    /// byte-level merges and spaces right).
    prefix: usize,
    /// Text of `ids[prefix..read]` already emitted.
    read: usize,
    skip_special_tokens: bool,
}

impl StreamDecoder {
    pub fn new(skip_special_tokens: bool) -> Self {
        Self { ids: Vec::new(), prefix: 0, read: 0, skip_special_tokens }
    }

    /// Adds a token; returns the new text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let before = tok.decode(&self.ids[self.prefix..self.read], self.skip_special_tokens)?;
        let now = tok.decode(&self.ids[self.prefix..], self.skip_special_tokens)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            let delta = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}

impl Tokenizer {
    /// Where each token of `text` ends, as UTF-16 offsets (what JavaScript strings index), ascending,
    /// the last one `text` 's UTF-16 length. A byte-level token that ends inside a multi-byte character is
    /// moved to that character's end. Special tokens written in the text count as themselves.
    pub fn token_ends_utf16(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| self.err(format!("encode: {e}")))?;
        // UTF-16 offset of every byte position that starts a character (and of the end).
        let mut utf16_at = vec![0u32; text.len() + 1];
        let mut u = 0u32;
        for (b, ch) in text.char_indices() {
            utf16_at[b] = u;
            u += ch.len_utf16() as u32;
        }
        utf16_at[text.len()] = u;
        let mut ends = Vec::with_capacity(enc.get_offsets().len());
        let mut last = 0u32;
        for &(_, end) in enc.get_offsets() {
            let mut b = end.min(text.len());
            while !text.is_char_boundary(b) {
                b += 1;
            }
            last = last.max(utf16_at[b]);
            ends.push(last);
        }
        // Offsets of trailing whitespace tokens may be trimmed; the last token ends at the text's end.
        if let Some(e) = ends.last_mut() {
            *e = u;
        }
        Ok(ends)
    }

    /// Token ids of `text` with no special tokens added (text-token counts, segmentation).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| self.err(format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// A lower bound on the tokens of `text`, counted in pieces of about 64 KiB cut before a space that follows a
    /// non-space (where the byte-level pre-tokenizers split anyway), one token of slack per cut; counting stops
    /// once the bound passes `limit`. It never exceeds the true count, and takes a piece's memory, not the whole
    /// text's (the tokenizer needs ~160 bytes a character).
    pub fn tokens_at_least(&self, text: &str, limit: usize) -> Result<usize> {
        const PIECE: usize = 1 << 16;
        let (mut counted, mut cuts, mut start) = (0usize, 0usize, 0usize);
        while start < text.len() && counted.saturating_sub(cuts) <= limit {
            let mut end = (start + PIECE).min(text.len());
            while end < text.len() && !(text.is_char_boundary(end) && text.as_bytes()[end] == b' ' && !text.as_bytes()[end - 1].is_ascii_whitespace()) {
                end += 1;
            }
            counted += self.count(&text[start..end])?;
            if end < text.len() {
                cuts += 1;
            }
            start = end;
        }
        Ok(counted.saturating_sub(cuts))
    }

    /// Number of tokens of `text` (no special tokens added).
    pub fn count(&self, text: &str) -> Result<usize> {
        let enc = self.inner.encode_fast(text, false).map_err(|e| self.err(format!("encode: {e}")))?;
        Ok(enc.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A family's end-to-end fixture model in shared/golden (tokenizer and chat template).
    fn e2e_dir(family: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/golden")).join(family).join("e2e")
    }

    #[test]
    fn byte_level_characters_map_back_to_gpt2_bytes() {
        assert_eq!(byte_level_byte('a'), Some(b'a'));
        assert_eq!(byte_level_byte('\u{120}'), Some(b' ')); // 'Ġ'
        assert_eq!(byte_level_byte('\u{10A}'), Some(b'\n')); // 'Ċ'
        assert_eq!(byte_level_byte('\u{142}'), Some(0xA0)); // 'ł'
        assert_eq!(byte_level_byte('\u{143}'), Some(0xAD)); // 'Ń'
        assert_eq!(byte_level_byte('\u{144}'), None);
    }

    #[test]
    fn token_bytes_add_up_to_the_text_for_both_families() {
        let text = "Ünïcode ∑ x² → 数学 😀 <|im_end|>\n\tdone";
        for family in ["qwen3vl", "glm4v"] {
            let dir = e2e_dir(family);
            let tok = Tokenizer::from_dir(&dir).unwrap();
            let ids = tok.encode(text).unwrap();
            let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
            assert_eq!(String::from_utf8(bytes).unwrap(), text, "{family}");
            // Some piece of the emoji is not valid UTF-8 alone.
            assert!(ids.iter().any(|&id| std::str::from_utf8(&tok.token_bytes(id)).is_err()), "{family}");
        }
    }

    #[test]
    fn python_style_json() {
        let v: Value = serde_json::from_str(r#"{"a": [1, 2.5, "x<y"], "b": {}, "c": null}"#).unwrap();
        let mut s = String::new();
        python_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, 2.5, "x<y"], "b": {}, "c": null}"#);
        let mut s = String::new();
        python_json(&v, Some(2), 0, &mut s);
        assert_eq!(s, "{\n  \"a\": [\n    1,\n    2.5,\n    \"x<y\"\n  ],\n  \"b\": {},\n  \"c\": null\n}");
    }

    #[test]
    fn template_semantics_follow_transformers() {
        let t = ChatTemplate {
            source: "test".into(),
            template: "{% for m in messages %}\n  {% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}\n{{ m.content | trim }}|{{ m.content.startswith('hi') }}|{{ {'k': 1} | tojson }}\n{% if loop.index > 1 %}{% break %}{% endif %}\n{% endfor %}".into(),
        };
        let msgs = vec![Message::text("user", "hi there "), Message::text("assistant", "ok"), Message::text("user", "x")];
        let out = t.render(&msgs, false, &Default::default()).unwrap();
        assert_eq!(out, "hi there|True|{\"k\": 1}\nok|False|{\"k\": 1}\n");
        let err = t.render(&[Message::text("system", "s")], false, &Default::default()).unwrap_err();
        assert!(err.to_string().contains("no system"), "{err}");
    }

    #[test]
    fn a_piecewise_count_never_exceeds_the_true_one() {
        let dir = e2e_dir("qwen3vl");
        let tok = Tokenizer::from_dir(&dir).unwrap();
        let text = "The sum is $\\frac{a}{b}$, so   x = 42.\n\nNext: ünïcode 数学 words ".repeat(9000);
        let exact = tok.count(&text).unwrap();
        let bound = tok.tokens_at_least(&text, usize::MAX).unwrap();
        assert!(bound <= exact && bound + 16 >= exact, "{bound} vs {exact}");
        // counting stops soon after the limit
        assert!(tok.tokens_at_least(&text, 1000).unwrap() > 1000);
    }

    #[test]
    fn runaway_templates_fail_with_a_clear_error() {
        let msgs = vec![Message::text("user", "hi")];
        let run = |template: &str| {
            let t = ChatTemplate { source: "/models/evil/chat_template.jinja".into(), template: template.into() };
            let started = std::time::Instant::now();
            let err = t.render(&msgs, true, &Default::default()).unwrap_err().to_string();
            assert!(started.elapsed().as_secs() < 20, "{err}");
            assert!(err.contains("/models/evil/chat_template.jinja"), "{err}");
            err
        };
        let err = run("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
        assert!(err.contains("steps"), "{err}");
        let err = run("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(err.contains("recursion"), "{err}");
        let err = run("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
        assert!(err.contains("wrote more than"), "{err}");
    }

    /// The budget leaves room for real templates on long conversations: both families' templates render
    /// 2,001 turns of 4 KB with reasoning and one 8 MB message (far past any context) within it.
    #[test]
    fn real_templates_fit_their_budget_on_long_conversations() {
        let turn = "Let me think. </think> The sum is $\\frac{a}{b}$, so x = 42. ".repeat(64);
        let long: Vec<Message> = (0..2001).map(|i| Message::text(if i % 2 == 0 { "user" } else { "assistant" }, &turn)).collect();
        let huge = vec![Message::text("user", &"many words here ".repeat(500_000))];
        for family in ["qwen3vl", "glm4v"] {
            let dir = e2e_dir(family);
            let t = ChatTemplate::from_dir(&dir).unwrap().unwrap();
            for msgs in [&long, &huge] {
                let out = t.render(msgs, true, &Default::default()).unwrap_or_else(|e| panic!("{family}: {e}"));
                // the last turn is the user's, written as it is
                assert!(out.contains(msgs.last().unwrap().texts().next().unwrap()), "{family}");
            }
        }
    }

    /// Templates that build ever larger values (the fuzzer's `crate/fuzz/known` string and tojson inputs):
    /// each fails with the budget error instead of growing until the process is killed. 60 doublings of
    /// 8 bytes would be 9 EB; the budget stops them near 256 MB. (A list doubled 33 times or more is not
    /// covered: minijinja 3.1 copies it out without charging fuel, see fuzz/README.md.)
    #[test]
    fn templates_that_grow_values_without_end_fail_with_a_clear_error() {
        let msgs = vec![Message::text("user", "hi")];
        for (template, want) in [
            ("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}", "budget"),
            ("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}", "budget"),
            ("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s|tojson %}{% endfor %}{{ ns.s|length }}", "budget"),
            ("{% set ns = namespace(l=[1,2,3,4]) %}{% for i in range(32) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|list|length }}", "budget"),
            ("{% set ns = namespace(s='x') %}{% for i in range(60) %}{% set ns.s = ns.s * 2 %}{% endfor %}{{ ns.s|length }}", "budget"),
            ("{{ messages|tojson(indent=1000000000000) }}", "indent"),
        ] {
            let t = ChatTemplate { source: "/models/evil/chat_template.jinja".into(), template: template.into() };
            let started = std::time::Instant::now();
            let err = t.render(&msgs, true, &Default::default()).unwrap_err().to_string();
            assert!(started.elapsed().as_secs() < 20, "{template}: {err}");
            assert!(err.contains(want) && err.contains("/models/evil/chat_template.jinja"), "{template}: {err}");
        }
    }

    #[test]
    fn image_tokens_expand_in_order() {
        assert_eq!(expand_image_tokens(&[1, 9, 2, 9], 9, &[2, 3]).unwrap(), vec![1, 9, 9, 2, 9, 9, 9]);
        assert!(expand_image_tokens(&[1, 9], 9, &[]).is_err());
    }
}
