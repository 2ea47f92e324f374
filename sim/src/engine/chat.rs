//! Multi-turn chat ([`crate::scenario::chat`]): the conversations of a
//! `chat` stream, their turns as calls carrying prefix hashes, and the
//! nodes' model servers (KV cache, prefill, decode).

use switchyard_core::prefix::{DEFAULT_BLOCK_TOKENS, DEFAULT_MAX_BLOCKS, block_hashes};
use switchyard_toy_model::kv::KvCache;

use super::*;
use crate::scenario::{ChatProcess, ModelSettings};

/// A node's simulated model server.
pub(super) struct NodeModel {
    /// Its KV cache (16-token chained blocks, LRU).
    pub(super) kv: KvCache,
    /// Prefill time per uncached token, µs.
    prefill_us_per_token: f64,
    /// Decode speed, tokens/s.
    tokens_per_s: f64,
}

impl NodeModel {
    pub(super) fn new(settings: &ModelSettings) -> Self {
        Self {
            kv: KvCache::new(settings.kv_cache_tokens, DEFAULT_BLOCK_TOKENS),
            prefill_us_per_token: settings.prefill_us_per_token,
            tokens_per_s: settings.tokens_per_s,
        }
    }
}

/// What a chat call is: a turn of a conversation.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChatCall {
    /// Its stream.
    stream: usize,
    /// The conversation, within the stream.
    conv: usize,
    /// Its prompt: the first this many words of the conversation's history.
    prompt_len: usize,
}

/// A chat call's figures on its node.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChatFigures {
    /// Prompt tokens looked up in the node's cache (when a worker took it).
    pub(super) prompt_tokens: Option<u64>,
    /// Of those, the ones found there.
    pub(super) cached_tokens: u64,
    /// When its prefill ended.
    pub(super) first_token: Option<Nanos>,
}

struct Conversation {
    /// Unique in the stream: its words are its own.
    serial: u64,
    /// The turn it is at (the next one to send, or the one under way).
    turn: u32,
    /// Shared words, system prompt, then each turn's user words and reply.
    history: Vec<String>,
}

/// The conversations of one `chat` stream.
pub(super) struct ChatRt {
    settings: ChatProcess,
    convs: Vec<Conversation>,
    /// Conversations not waiting for a reply.
    idle: Vec<usize>,
    /// Arrivals that found every conversation waiting.
    pending: u32,
    rng: StdRng,
    next_serial: u64,
}

impl ChatRt {
    /// The stream's conversations, each at a random turn (its history as if
    /// the earlier turns happened), all idle.
    pub(super) fn new(settings: &ChatProcess, seed: u64) -> Self {
        let mut rt = Self {
            settings: settings.clone(),
            convs: Vec::new(),
            idle: Vec::new(),
            pending: 0,
            rng: StdRng::seed_from_u64(seed),
            next_serial: 0,
        };
        for i in 0..settings.conversations as usize {
            let mut conv = rt.fresh();
            let start = rt.rng.random_range(0..settings.turns);
            for _ in 0..start {
                rt.user_words(&mut conv);
                rt.reply_words(&mut conv);
                conv.turn += 1;
            }
            rt.convs.push(conv);
            rt.idle.push(i);
        }
        rt
    }

    fn fresh(&mut self) -> Conversation {
        let serial = self.next_serial;
        self.next_serial += 1;
        let s = &self.settings;
        let mut history = Vec::with_capacity(
            usize::try_from(s.prompt_tokens(s.turns)).unwrap_or(0) + s.reply_words as usize,
        );
        history.extend((0..s.shared_words).map(|i| format!("w{i}")));
        history.extend((0..s.system_words).map(|i| format!("c{serial}.s{i}")));
        Conversation {
            serial,
            turn: 0,
            history,
        }
    }

    fn user_words(&self, conv: &mut Conversation) {
        let (serial, turn) = (conv.serial, conv.turn);
        let words = (0..self.settings.user_words).map(|i| format!("c{serial}.t{turn}.u{i}"));
        conv.history.extend(words);
    }

    fn reply_words(&self, conv: &mut Conversation) {
        let (serial, turn) = (conv.serial, conv.turn);
        let words = (0..self.settings.reply_words).map(|i| format!("c{serial}.t{turn}.r{i}"));
        conv.history.extend(words);
    }

    /// An arrival: the conversation whose turn it is (a random idle one),
    /// or `None` when every one waits for a reply (the arrival then goes to
    /// the first one answered).
    fn arrival(&mut self) -> Option<usize> {
        if self.idle.is_empty() {
            self.pending += 1;
            return None;
        }
        let i = self.rng.random_range(0..self.idle.len());
        Some(self.idle.swap_remove(i))
    }

    /// Sends conversation `conv`'s next turn: its user message joins the
    /// history, which is the prompt.
    fn send(&mut self, conv: usize) -> usize {
        let mut c = std::mem::replace(
            &mut self.convs[conv],
            Conversation {
                serial: 0,
                turn: 0,
                history: Vec::new(),
            },
        );
        self.user_words(&mut c);
        let len = c.history.len();
        self.convs[conv] = c;
        len
    }

    /// A turn of `conv` ended (answered when `ok`: the reply joins the
    /// history). Returns whether the conversation's next turn is due now
    /// (an arrival was waiting for it); else it is idle.
    fn ended(&mut self, conv: usize, ok: bool) -> bool {
        let mut c = std::mem::replace(
            &mut self.convs[conv],
            Conversation {
                serial: 0,
                turn: 0,
                history: Vec::new(),
            },
        );
        if ok {
            self.reply_words(&mut c);
        }
        c.turn += 1;
        if c.turn >= self.settings.turns {
            c = self.fresh();
        }
        self.convs[conv] = c;
        if self.pending > 0 {
            self.pending -= 1;
            true
        } else {
            self.idle.push(conv);
            false
        }
    }

    fn prompt(&self, call: &ChatCall) -> &[String] {
        &self.convs[call.conv].history[..call.prompt_len]
    }
}

impl Sim {
    /// An arrival of chat stream `stream`: the next turn of an idle
    /// conversation.
    pub(super) fn chat_arrival(&mut self, stream: usize) {
        let Some(chat) = self.streams[stream].chat.as_mut() else {
            return;
        };
        if let Some(conv) = chat.arrival() {
            self.chat_turn(stream, conv);
        }
    }

    /// Sends conversation `conv`'s next turn as a call with its prompt's
    /// prefix hashes.
    pub(super) fn chat_turn(&mut self, stream: usize, conv: usize) {
        let Some(chat) = self.streams[stream].chat.as_mut() else {
            return;
        };
        let prompt_len = chat.send(conv);
        let call = ChatCall {
            stream,
            conv,
            prompt_len,
        };
        let prefix = block_hashes(
            chat.prompt(&call).iter().map(String::as_str),
            DEFAULT_BLOCK_TOKENS,
            DEFAULT_MAX_BLOCKS,
        );
        self.admit(stream, Some(call), Arc::from(prefix));
    }

    /// A chat call ended (any outcome): its conversation moves on.
    pub(super) fn chat_ended(&mut self, call: &ChatCall, ok: bool) {
        let Some(chat) = self.streams[call.stream].chat.as_mut() else {
            return;
        };
        if chat.ended(call.conv, ok) {
            self.at(
                self.now,
                Ev::Turn {
                    stream: call.stream,
                    conv: call.conv,
                },
            );
        }
    }

    /// Where a worker takes a chat call on a node with a model: looks its
    /// prompt up in the node's cache and returns (prefill, decode) in ms at
    /// speed 1; `None` for other calls and nodes.
    pub(super) fn model_times(&mut self, node: usize, call: CallId) -> Option<(f64, f64)> {
        let rec = self.calls.get_mut(&call)?;
        let chat = rec.chat?;
        let model = self.nodes[node].model.as_ref()?;
        let prompt = self.streams[chat.stream].chat.as_ref()?.prompt(&chat);
        let cached = model.kv.lookup(prompt);
        let uncached = prompt.len() - cached;
        rec.figures.prompt_tokens = Some(prompt.len() as u64);
        rec.figures.cached_tokens = cached as u64;
        let prefill_ms = uncached as f64 * model.prefill_us_per_token / 1000.0;
        let reply = f64::from(
            self.streams[chat.stream]
                .chat
                .as_ref()?
                .settings
                .reply_words,
        );
        Some((prefill_ms, reply / model.tokens_per_s * 1000.0))
    }

    /// A chat call's prefill ended: its prompt is in the node's cache, its
    /// first token out.
    pub(super) fn prefilled(&mut self, call: CallId) {
        let now = self.now;
        let Some(rec) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(chat), Stage::Running { node, .. }) = (rec.chat, rec.stage) else {
            return;
        };
        rec.figures.first_token = Some(now);
        let (Some(model), Some(rt)) = (
            self.nodes[node].model.as_mut(),
            self.streams[chat.stream].chat.as_ref(),
        ) else {
            return;
        };
        model.kv.insert(rt.prompt(&chat));
    }
}
