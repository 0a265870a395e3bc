"""Train a tiny Qwen3-ASR and a tiny Qwen3-ForcedAligner on espeak-ng speech, on a CPU.

The checkpoints have the released models' "thinker" layout (what vLLM's native Qwen3-ASR classes
load) and answer exactly the pipeline's protocol:

- ASR: ``<|im_start|>system\\n{context}<|im_end|>\\n<|im_start|>user\\n<|audio_start|>[audio]
  <|audio_end|><|im_end|>\\n<|im_start|>assistant\\n`` -> ``language German<asr_text>eins zwei<|im_end|>``
  (``language None<asr_text>`` for audio without speech);
- aligner: ``<|audio_start|>[audio]<|audio_end|>w1<timestamp><timestamp>w2...``, the class at each
  ``<timestamp>`` is the time in 80 ms steps.

Runs in its own environment (training/requirements.txt): the thinker-layout modelling code is
qwen-asr's, which needs transformers 4.57.6. Usage, from the repository root::

    python -m training.train_tiny asr   --minutes 85 --seed 0 --out build/stages/asr-stage-a
    python -m training.train_tiny align --minutes 25 --seed 0 --init build/stages/asr-stage-a \\
        --out models/tiny-qwen3-aligner-synth

(the committed checkpoints' exact flags and step counts: training/rebuild.sh)

What makes such a small model learn at all (see training/README.md): fan-in init of the audio conv
front end, a CTC head on the audio tower output during ASR training (dropped on save), a
block-diagonal attention mask in the audio tower when utterances are batched by concatenation,
and the aligner trained on top of the ASR weights.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import pickle
import shutil
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training import synth_speech as synth  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))
import tiny_asr  # noqa: E402  (tokenizer, chat template and config layout of the test fixtures)

SAMPLE_RATE = 16000
AUDIO_TOKENS_PER_WINDOW = 13 * 8  # n_window_infer (800 frames) / 100 frames x 13 tokens
CLASSIFY_NUM = 256
SEGMENT_MS = 80

AUDIO = {
    "num_mel_bins": 128,
    "d_model": 256,
    "encoder_layers": 4,
    "encoder_attention_heads": 4,
    "encoder_ffn_dim": 768,
    "downsample_hidden_size": 32,
    "output_dim": 256,
    "n_window": 50,
    "n_window_infer": 800,
    "activation_function": "gelu",
}
TEXT = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "hidden_act": "silu",
    "max_position_embeddings": 65536,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "tie_word_embeddings": False,
    "attention_bias": False,
}
MROPE_SECTION = [16, 8, 8]  # sums to head_dim / 2


# ---- checkpoint files ----------------------------------------------------------------------------


def _bpe_corpus() -> list[str]:
    """Every vocabulary word with and without a leading space, so each becomes one token."""
    lines = list(tiny_asr._BPE_CORPUS)
    for lang, words in synth.VOCAB.items():
        lines += [f"language {lang}", " ".join(words)] + words + [" " + w for w in words]
    return lines * 8


def write_tokenizer(out_dir: str) -> dict[str, int]:
    # tiny_asr's builder reads these module constants when called.
    tiny_asr._BPE_CORPUS = _bpe_corpus()
    tiny_asr.BPE_VOCAB_SIZE = 1000
    return tiny_asr._build_tokenizer(out_dir)


def write_configs(out_dir: str, ids: dict[str, int], *, aligner: bool) -> dict:
    text_config = {
        **TEXT,
        "vocab_size": ids["vocab_size"],
        "model_type": "qwen3_asr_text",
        # vLLM requires rope_scaling with mrope_section (positions are the same in all 3 sections).
        "rope_scaling": {"rope_type": "default", "mrope_section": MROPE_SECTION, "interleaved": True, "mrope_interleaved": True},
        "use_cache": True,
        "dtype": "bfloat16",
    }
    audio_config = {
        **AUDIO,
        "model_type": "qwen3_asr_audio_encoder",
        "max_source_positions": 1500,
        "conv_chunksize": 500,
        "scale_embedding": False,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "dtype": "bfloat16",
    }
    thinker = {
        "model_type": "qwen3_asr_thinker",
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "audio_config": audio_config,
        "text_config": text_config,
        "audio_token_id": ids["<|audio_pad|>"],
        "audio_start_token_id": ids["<|audio_start|>"],
        "audio_end_token_id": ids["<|audio_end|>"],
        "user_token_id": ids["<|im_start|>"],
        "initializer_range": 0.02,
        "dtype": "bfloat16",
    }
    config = {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": tiny_asr.SUPPORT_LANGUAGES,
        "thinker_config": thinker,
        "dtype": "bfloat16",
        "transformers_version": "4.57.6",
    }
    if aligner:
        thinker["classify_num"] = CLASSIFY_NUM
        config["timestamp_token_id"] = ids["<timestamp>"]
        config["timestamp_segment_time"] = SEGMENT_MS
    tiny_asr._write_json(out_dir, "config.json", config)
    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    tiny_asr._write_json(out_dir, "generation_config.json", {
        "eos_token_id": eos, "pad_token_id": ids["<|endoftext|>"], "do_sample": False,
        "temperature": 1.0, "max_new_tokens": 512,
    })  # fmt: skip
    tiny_asr._write_json(out_dir, "preprocessor_config.json", {
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "Qwen3ASRProcessor",
        "feature_size": 128, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
        "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right",
        "padding_value": 0.0, "dither": 0.0, "return_attention_mask": True,
    })  # fmt: skip
    tiny_asr._write_json(out_dir, "chat_template.json", {"chat_template": tiny_asr.CHAT_TEMPLATE})
    return config


def _qwen_asr_modeling():
    """qwen-asr's transformers classes, without its package __init__ (which pulls in inference deps)."""
    if "qwen_asr" not in sys.modules:
        spec = importlib.util.find_spec("qwen_asr")
        pkg = types.ModuleType("qwen_asr")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["qwen_asr"] = pkg
    from qwen_asr.core.transformers_backend import configuration_qwen3_asr as cfg
    from qwen_asr.core.transformers_backend import modeling_qwen3_asr as mod

    return cfg, mod


def build_thinker(config: dict, seed: int):
    cfg, mod = _qwen_asr_modeling()
    thinker_cfg = dict(config["thinker_config"])
    thinker_cfg.pop("classify_num", None)
    tc = cfg.Qwen3ASRThinkerConfig(**thinker_cfg)
    tc.audio_config._attn_implementation = "sdpa"
    tc.text_config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    thinker = mod.Qwen3ASRThinkerForConditionalGeneration(tc).float()  # config says bf16: train in fp32
    tower = thinker.audio_tower
    # Fan-in init: the default normal(0.02) makes the conv front end's output ~1000x smaller than
    # the position embedding, and the decoder never hears the audio.
    for m in (tower.conv2d1, tower.conv2d2, tower.conv2d3, tower.conv_out):
        m.reset_parameters()
    return thinker


def save_checkpoint(out_dir: str, state: dict[str, torch.Tensor], info: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in sorted(state.items())}
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    tiny_asr._write_json(out_dir, "training_info.json", info)


def thinker_state(thinker, head: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    state = {f"thinker.{k}": v for k, v in thinker.state_dict().items()}
    if head is not None:
        state["thinker.lm_head.weight"] = head.weight
    return state


# ---- features ------------------------------------------------------------------------------------


class LogMel:
    """WhisperFeatureExtractor's log-mel (128 bins), per clip, as vLLM's processor computes it."""

    def __init__(self) -> None:
        from transformers import WhisperFeatureExtractor

        self.fe = WhisperFeatureExtractor(feature_size=128)
        self.filters = torch.from_numpy(self.fe.mel_filters).float().T.contiguous()
        self.window = torch.hann_window(400)

    def __call__(self, wave: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(wave).float()
        stft = torch.stft(x, 400, 160, window=self.window, return_complex=True)
        mel = self.filters @ (stft[..., :-1].abs() ** 2)
        log = torch.clamp(mel, min=1e-10).log10()
        log = torch.maximum(log, log.max() - 8.0)
        return (log + 4.0) / 4.0  # [128, frames]

    def check(self) -> None:
        wave = np.random.default_rng(0).standard_normal(23456).astype(np.float32) * 0.1
        ref = self.fe(wave, sampling_rate=SAMPLE_RATE, return_tensors="np")["input_features"][0]
        mine = self(wave).numpy()
        assert np.allclose(ref[:, : mine.shape[1]], mine, atol=1e-4), "log-mel differs from WhisperFeatureExtractor"


def spec_augment(feat: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    feat = feat.clone()
    floor = feat.min()
    for _ in range(2):
        w = int(rng.integers(0, 16))
        f0 = int(rng.integers(0, 128 - w))
        feat[f0 : f0 + w] = floor
    t = feat.shape[1]
    for _ in range(int(rng.integers(0, 3))):
        w = int(rng.integers(0, min(8, max(1, t // 10)) + 1))
        t0 = int(rng.integers(0, max(1, t - w)))
        feat[:, t0 : t0 + w] = floor
    return feat


def audio_token_count(frames: int) -> int:
    rem = frames % 100
    feat = (rem - 1) // 2 + 1
    return ((feat - 1) // 2 + 1 - 1) // 2 + 1 + (frames // 100) * 13


# ---- model forward -------------------------------------------------------------------------------


def _after_cnn(n: int) -> int:
    for _ in range(3):
        n = (n - 1) // 2 + 1
    return n


def audio_forward(tower, feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """The audio tower on a batch of clips at once; returns one [tokens, D] tensor per clip.

    As in vLLM: each 100-frame chunk goes through the conv front end on its own (position
    embedding restarts per chunk), and attention stays inside windows of 8 chunks of one clip.
    """
    chunks, lens_after, per_clip = [], [], []
    for f in feats:
        pieces = list(f.split(100, dim=1))
        chunks += [p.T for p in pieces]
        la = [_after_cnn(p.shape[1]) for p in pieces]
        lens_after += la
        per_clip.append(sum(la))
    padded = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True).transpose(1, 2).unsqueeze(1)
    x = F.gelu(tower.conv2d1(padded))
    x = F.gelu(tower.conv2d2(x))
    x = F.gelu(tower.conv2d3(x))
    b, c, fq, t = x.shape
    x = tower.conv_out(x.permute(0, 3, 1, 2).reshape(b, t, c * fq))
    x = x + tower.positional_embedding.positional_embedding[:t].unsqueeze(0).to(x.dtype)
    mask = torch.arange(t)[None, :] < torch.tensor(lens_after)[:, None]
    hidden = x[mask]  # clip after clip, chunk after chunk

    blocks = []
    for n in per_clip:
        blocks += [AUDIO_TOKENS_PER_WINDOW] * (n // AUDIO_TOKENS_PER_WINDOW)
        if n % AUDIO_TOKENS_PER_WINDOW:
            blocks.append(n % AUDIO_TOKENS_PER_WINDOW)
    block_id = torch.repeat_interleave(torch.arange(len(blocks)), torch.tensor(blocks))
    attn = torch.zeros(len(block_id), len(block_id))
    attn.masked_fill_(block_id[:, None] != block_id[None, :], float("-inf"))
    attn = attn[None, None]
    cu = torch.tensor([0] + blocks).cumsum(0).to(torch.int32)
    for layer in tower.layers:
        hidden = layer(hidden, cu, attention_mask=attn)[0]
    hidden = tower.ln_post(hidden)
    hidden = tower.proj2(tower.act(tower.proj1(hidden)))
    return list(hidden.split(per_clip))


def decoder_forward(thinker, ids: torch.Tensor, attn_mask: torch.Tensor, audio: list[torch.Tensor], audio_token_id: int):
    emb = thinker.model.get_input_embeddings()(ids)
    audio_cat = torch.cat(audio).to(emb.dtype)
    sel = (ids == audio_token_id).unsqueeze(-1).expand_as(emb)
    emb = emb.masked_scatter(sel, audio_cat)
    b, length = ids.shape
    pos = torch.arange(length)[None, :].expand(b, -1)
    pos = pos.unsqueeze(0).expand(3, -1, -1)
    out = thinker.model(inputs_embeds=emb, attention_mask=attn_mask, position_ids=pos, use_cache=False)
    return out.last_hidden_state


# ---- data ----------------------------------------------------------------------------------------


class Tok:
    def __init__(self, ckpt_dir: str) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(os.path.join(ckpt_dir, "tokenizer.json"))
        self.id = {t: self.tok.token_to_id(t) for t in tiny_asr.SPECIAL_TOKENS + tiny_asr.NORMAL_ADDED_TOKENS}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)


PROMPT_HEAD = "<|im_start|>system\n<|im_end|>\n<|im_start|>user\n<|audio_start|>"
PROMPT_TAIL = "<|audio_end|><|im_end|>\n<|im_start|>assistant\n"


def asr_example(tok: Tok, n_audio: int, text: str, language: str | None) -> tuple[list[int], list[int]]:
    """(input ids, labels) with the loss on the answer only."""
    prompt = tok.encode(PROMPT_HEAD) + [tok.id["<|audio_pad|>"]] * n_audio + tok.encode(PROMPT_TAIL)
    answer = f"language {language}<asr_text>{text}" if language else "language None<asr_text>"
    ans = tok.encode(answer) + [tok.id["<|im_end|>"]]
    return prompt + ans, [-100] * len(prompt) + ans


def word_bank(seed: int, n_voices: int, grid) -> list[tuple[str, synth.Voice, dict[str, np.ndarray]]]:
    """For each of n_voices random voice settings, every vocabulary word of its language, trimmed."""
    rng = np.random.default_rng(seed)
    voices = [synth.random_voice(rng, grid) for _ in range(n_voices)]

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        clips = list(pool.map(lambda v: synth.word_clips(synth.VOCAB[v.language], v), voices))
    return [(v.language, v, dict(zip(synth.VOCAB[v.language], c))) for v, c in zip(voices, clips)]


def sentence_groups(seed: int, n_groups: int, per_group: int, grid) -> list[list[synth.Utterance]]:
    """Groups of sentences that share one voice (so long recordings can be made from a group).

    Audio is kept as float16 to halve the memory of the corpus."""
    from concurrent.futures import ThreadPoolExecutor

    def group(i: int) -> list[synth.Utterance]:
        rng = np.random.default_rng([seed, i])
        lang = synth.LANGUAGES[i % len(synth.LANGUAGES)]
        voice = synth.random_voice(rng, grid, lang)
        texts = [" ".join(synth.random_words(rng, lang)) for _ in range(per_group)]
        clips = synth.sentence_clips(texts, voice)
        return [synth.Utterance(c.astype(np.float16), t, lang, voice) for c, t in zip(clips, texts)]

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(group, range(n_groups)))


def _min_len(x: np.ndarray) -> np.ndarray:
    # The engine pads clips shorter than 0.5 s with zeros at the end; train on what it will see.
    if len(x) < SAMPLE_RATE // 2:
        x = np.pad(x, (0, SAMPLE_RATE // 2 - len(x)))
    return x


def join_with_pauses(clips: list[np.ndarray], rng: np.random.Generator, pause_s: tuple[float, float]) -> np.ndarray:
    """Sentences of one voice as one recording, a random pause between each two (float32)."""
    parts = []
    for c in clips:  # a pause is drawn after every clip, the last one dropped: a fixed rng order
        parts += [c.astype(np.float32), np.zeros(int(rng.uniform(*pause_s) * SAMPLE_RATE), np.float32)]
    return np.concatenate(parts[:-1])


class AsrData:
    def __init__(self, groups, bank, rng: np.random.Generator, *, channel: float = 0.0, long_max: int = 0) -> None:
        self.groups, self.bank, self.rng = groups, bank, rng
        self.channel = channel  # share of clips through channel_augment
        self.long_max = long_max  # most sentences in a long recording (0: one group's worth)

    def sample(self, long: bool = False) -> tuple[np.ndarray, str, str | None]:
        r = self.rng.random()
        if r < 0.02:  # no speech at all
            n = int(self.rng.uniform(0.5, 3.0) * SAMPLE_RATE)
            noise = self.rng.standard_normal(n).astype(np.float32) * 10 ** (self.rng.uniform(-70, -30) / 20)
            return noise, "", None
        if r < 0.14:  # words joined with gaps (what the aligner items sound like)
            lang, voice, words = self.bank[int(self.rng.integers(len(self.bank)))]
            chosen = synth.random_words(self.rng, lang, 1, 6)
            audio, _ = synth.join_aligned([(w, words[w]) for w in chosen], self.rng)
            return self._channel(synth.augment(audio, self.rng, edge_s=(0.0, 0.2))), " ".join(chosen), lang
        group = self.groups[int(self.rng.integers(len(self.groups)))]
        if long:  # a longer recording: several sentences of one voice with pauses
            if self.long_max:
                # More sentences than one group holds: a 20-25 s chunk of a long recording
                # holds about ten; repeats of a sentence come in a different order.
                k = int(self.rng.integers(2, self.long_max + 1))
                idx = np.concatenate([self.rng.permutation(len(group)) for _ in range(-(-k // len(group)))])[:k]
                pause = (0.2, 1.2)
            else:
                k = int(self.rng.integers(2, len(group) + 1))
                idx = self.rng.permutation(len(group))[:k]
                pause = (0.2, 1.0)
            audio = synth.augment(join_with_pauses([group[j].audio for j in idx], self.rng, pause), self.rng)
            return self._channel(audio), " ".join(group[j].text for j in idx), group[0].language
        utt = group[int(self.rng.integers(len(group)))]
        return self._channel(synth.augment(utt.audio.astype(np.float32), self.rng)), utt.text, utt.language

    def _channel(self, x: np.ndarray) -> np.ndarray:
        return synth.channel_augment(x, self.rng, self.channel) if self.channel else x


# ---- training loops ------------------------------------------------------------------------------


class Schedule:
    """Linear warm-up, cosine decay to 5 % over the step count estimated from the time budget."""

    def __init__(self, peak: float, warmup: int, total: int) -> None:
        self.peak, self.warmup, self.total = peak, warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        p = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def _budget(args, step: int, t0: float, sched: Schedule) -> bool:
    """True while training should go on.

    With only a time budget the schedule's length is re-estimated from the speed so far: on a
    shared machine the speed changes, and a length fixed early would end the decay far too soon
    or too late."""
    if args.steps and step >= args.steps:
        return False
    elapsed = time.time() - t0
    if args.minutes and elapsed >= args.minutes * 60:
        return False
    if not args.steps and args.minutes and step >= 10:
        sched.total = max(step + 1, int(step * args.minutes * 60 / elapsed))
    return True


@torch.no_grad()
def greedy_eval(thinker, tok: Tok, mel: LogMel, dev: list[synth.Utterance], max_new: int = 24) -> dict:
    """Greedy decoding (no KV cache: the sequences are short) -> WER and language accuracy."""
    thinker.eval()
    errors = words = lid_ok = 0
    for i in range(0, len(dev), 16):
        batch = dev[i : i + 16]
        waves = [_min_len(u.audio) for u in batch]
        feats = [mel(w) for w in waves]
        audio = audio_forward(thinker.audio_tower, feats)
        seqs = [tok.encode(PROMPT_HEAD) + [tok.id["<|audio_pad|>"]] * a.shape[0] + tok.encode(PROMPT_TAIL) for a in audio]
        done = [False] * len(seqs)
        for _ in range(max_new):
            length = max(map(len, seqs))
            ids = torch.full((len(seqs), length), tok.id["<|endoftext|>"])
            am = torch.zeros(len(seqs), length, dtype=torch.long)
            for j, s in enumerate(seqs):
                ids[j, : len(s)] = torch.tensor(s)
                am[j, : len(s)] = 1
            h = decoder_forward(thinker, ids, am, audio, tok.id["<|audio_pad|>"])
            last = torch.stack([h[j, len(s) - 1] for j, s in enumerate(seqs)])
            nxt = thinker.lm_head(last).argmax(-1).tolist()
            for j, t in enumerate(nxt):
                if not done[j]:
                    seqs[j].append(t)
                    done[j] = t in (tok.id["<|im_end|>"], tok.id["<|endoftext|>"])
            if all(done):
                break
        for u, s, a in zip(batch, seqs, audio):
            n_prompt = len(tok.encode(PROMPT_HEAD)) + a.shape[0] + len(tok.encode(PROMPT_TAIL))
            raw = tok.decode(s[n_prompt:])
            lang, _, text = raw.partition("<asr_text>")
            lid_ok += lang.strip() == f"language {u.language}"
            errors += _edit_distance(u.text.split(), text.split())
            words += len(u.text.split())
    thinker.train()
    return {"wer": errors / max(1, words), "lid": lid_ok / max(1, len(dev))}


def _edit_distance(a: list[str], b: list[str]) -> int:
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    return d[-1]


def train_asr(args) -> None:
    torch.set_num_threads(args.threads)
    out = args.out
    os.makedirs(out, exist_ok=True)
    ids = write_tokenizer(out)
    config = write_configs(out, ids, aligner=False)
    tok = Tok(out)
    for lang, words in synth.VOCAB.items():  # one token per word keeps answers and CTC targets short
        for w in words:
            assert len(tok.encode(" " + w)) == 1, (lang, w, tok.encode(" " + w))
    mel = LogMel()
    mel.check()

    seen = synth.voice_grid(synth.TRAIN_ACCENTS, synth.TRAIN_VARIANTS)
    unseen = synth.voice_grid(synth.HELDOUT_ACCENTS, synth.HELDOUT_VARIANTS)
    t_data = time.time()
    cache = Path(args.cache_dir) / f"asr-seed{args.seed}-groups{args.groups}-bank{args.bank_voices}.pkl"
    if cache.exists():  # same seed and sizes: the same data, without minutes of espeak-ng
        with open(cache, "rb") as f:
            groups, bank, dev = pickle.load(f)
    else:
        groups = sentence_groups(args.seed * 7919 + 1, args.groups, 8, seen)
        bank = word_bank(args.seed * 7919 + 2, args.bank_voices, seen)
        dev = [synth.make_sentence(np.random.default_rng([args.seed, 77, i]), seen if i % 2 else unseen) for i in range(48)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as f:
            pickle.dump((groups, bank, dev), f, protocol=pickle.HIGHEST_PROTOCOL)
    dev_long = long_dev_set(args.seed, seen)
    data_s = time.time() - t_data
    n_utt = sum(len(g) for g in groups)
    hours = sum(len(u.audio) for g in groups for u in g) / SAMPLE_RATE / 3600
    print(f"data: {n_utt} sentences ({hours:.2f} h), {len(bank)} word-bank voices, {data_s:.0f} s", flush=True)

    thinker = build_thinker(config, args.seed)
    previous = []
    if args.init:  # a further stage: the same data and tokenizer, weights from the earlier stage
        from safetensors.torch import load_file

        state = load_file(os.path.join(args.init, "model.safetensors"))
        thinker.load_state_dict({k[len("thinker."):]: v.float() for k, v in state.items()}, strict=True)
        with open(os.path.join(args.init, "training_info.json"), encoding="utf-8") as f:
            before = json.load(f)
        previous = before.get("previous_stages", []) + [{k: v for k, v in before.items() if k != "previous_stages"}]
    thinker.train()
    vocab = ids["vocab_size"]
    ctc_head = torch.nn.Linear(TEXT["hidden_size"], vocab + 1)  # training only; blank = vocab
    params = list(thinker.parameters()) + list(ctc_head.parameters())
    print(f"parameters: {sum(p.numel() for p in thinker.parameters()) / 1e6:.2f} M", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    sched = Schedule(args.lr, args.warmup, args.steps or 2000)
    # A later stage draws a different sample order from the same data.
    stage = len(previous)
    data = AsrData(groups, bank, np.random.default_rng([args.seed, 1, stage]), channel=args.channel_augment, long_max=args.long_max)
    aug_rng = np.random.default_rng([args.seed, 2, stage])
    audio_pad = tok.id["<|audio_pad|>"]

    t0 = time.time()
    last_save = t0
    step = 0
    history = []
    ema = None
    data_time = 0.0
    while _budget(args, step, t0, sched):
        for g in opt.param_groups:
            g["lr"] = sched(step)
        t_batch = time.time()
        feats, seqs, ctc_targets = [], [], []
        # Long recordings come in batches of their own (fewer of them): mixed with short ones,
        # every short sequence would be padded to the long one's length.
        long = data.rng.random() < args.long_share
        for _ in range(max(1, args.batch // (8 if args.long_max > 8 else 4)) if long else args.batch):
            wave, text, lang = data.sample(long)
            wave = _min_len(wave)
            f = mel(wave)
            if step > args.warmup and aug_rng.random() < args.spec_augment:
                f = spec_augment(f, aug_rng)
            feats.append(f)
            n_audio = audio_token_count(f.shape[1])
            seqs.append(asr_example(tok, n_audio, text, lang))
            ctc_targets.append(tok.encode(" " + text) if text else [])
        data_time += time.time() - t_batch
        audio = audio_forward(thinker.audio_tower, feats)
        length = max(len(s[0]) for s in seqs)
        ids_t = torch.full((len(seqs), length), tok.id["<|endoftext|>"])
        lab = torch.full((len(seqs), length), -100)
        am = torch.zeros(len(seqs), length, dtype=torch.long)
        for j, (s, lb) in enumerate(seqs):
            ids_t[j, : len(s)] = torch.tensor(s)
            lab[j, : len(lb)] = torch.tensor(lb)
            am[j, : len(s)] = 1
        h = decoder_forward(thinker, ids_t, am, audio, audio_pad)
        logits = thinker.lm_head(h[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=-100)

        lp = torch.nn.utils.rnn.pad_sequence([ctc_head(a) for a in audio]).log_softmax(-1)  # [T, B, V+1]
        in_lens = torch.tensor([a.shape[0] for a in audio])
        tgt_lens = torch.tensor([len(t) for t in ctc_targets])
        tgt = torch.tensor([x for t in ctc_targets for x in t] or [0])
        ctc = F.ctc_loss(lp, tgt, in_lens, tgt_lens, blank=vocab, zero_infinity=True)
        loss = ce + args.ctc_weight * ctc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        ema = ce.item() if ema is None else 0.98 * ema + 0.02 * ce.item()
        if step % 25 == 0:
            el = time.time() - t0
            print(f"step {step} ce {ce.item():.3f} (ema {ema:.3f}) ctc {ctc.item():.3f} lr {sched(step):.2e} {el / step:.2f} s/step (data {data_time / step:.2f}) {el / 60:.1f} min", flush=True)
        if time.time() - last_save > args.save_every * 60:
            last_save = time.time()
            _save_asr(out, thinker, tok, mel, (dev, dev_long), args, step, t0, data_s, n_utt, hours, history, previous)
    _save_asr(out, thinker, tok, mel, (dev, dev_long), args, step, t0, data_s, n_utt, hours, history, previous, final=True)


def long_dev_set(seed: int, grid, n: int = 8) -> list[synth.Utterance]:
    """Held-out long recordings (8-25 s): 4-12 sentences of one voice with pauses, as in the test
    set's long items. Short dev sentences alone hid that a model transcribing them well lost its
    place after the first sentence of a longer recording."""
    out = []
    for i, group in enumerate(sentence_groups(seed * 7919 + 3, n, 12, grid)):
        rng = np.random.default_rng([seed, 79, i])
        k = int(rng.integers(4, len(group) + 1))
        audio = synth.augment(join_with_pauses([u.audio for u in group[:k]], rng, (0.5, 1.2)), rng, edge_s=(0.2, 0.5))
        out.append(synth.Utterance(audio, " ".join(u.text for u in group[:k]), group[0].language, group[0].voice))
    return out


def _save_asr(out, thinker, tok, mel, devs, args, step, t0, data_s, n_utt, hours, history, previous, final=False) -> None:
    train_s = time.time() - t0
    dev, dev_long = devs
    ev = greedy_eval(thinker, tok, mel, dev)
    ev_long = greedy_eval(thinker, tok, mel, dev_long, max_new=72)
    ev["wer_long"] = ev_long["wer"]
    history.append({"step": step, "minutes": round(train_s / 60, 2), **{k: round(v, 4) for k, v in ev.items()}})
    print(f"checkpoint at step {step}: dev WER {ev['wer']:.3f} LID {ev['lid']:.3f}, long recordings WER {ev['wer_long']:.3f}", flush=True)
    info = {
        "kind": "asr",
        "final": final,
        **run_info(args, step, train_s, data_s, history),
        "ctc_weight": args.ctc_weight,
        "spec_augment": args.spec_augment,
        "channel_augment": args.channel_augment,
        "long_share": args.long_share,
        "long_max": args.long_max,
        "sentences": n_utt,
        "sentence_hours": round(hours, 2),
        "init": os.path.relpath(args.init, REPO) if args.init else None,
        "previous_stages": previous,
    }
    save_checkpoint(out, thinker_state(thinker), info)


def run_info(args, step: int, train_s: float, data_s: float, history: list[dict]) -> dict:
    """What every training_info.json records: the run's limits, seed, time and dev history."""
    return {
        "seed": args.seed,
        "steps": step,
        "step_limit": args.steps,
        "minutes_limit": args.minutes,
        "train_seconds": round(train_s, 1),
        "data_seconds": round(data_s, 1),
        "threads": args.threads,
        "batch": args.batch,
        "peak_lr": args.lr,
        "warmup": args.warmup,
        "word_bank_voices": args.bank_voices,
        "dev_history": history,
        "torch": torch.__version__,
        "command": " ".join(sys.argv),
    }


def aligner_example(tok: Tok, n_audio: int, words: list[dict]) -> tuple[list[int], list[float]]:
    ids = [tok.id["<|audio_start|>"]] + [tok.id["<|audio_pad|>"]] * n_audio + [tok.id["<|audio_end|>"]]
    times = []
    ts = tok.id["<timestamp>"]
    for w in words:
        ids += tok.encode(w["word"]) + [ts, ts]
        times += [w["start"], w["end"]]
    return ids, times


def train_align(args) -> None:
    torch.set_num_threads(args.threads)
    out = args.out
    os.makedirs(out, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(os.path.join(args.init, name), os.path.join(out, name))
    with open(os.path.join(args.init, "tokenizer.json"), encoding="utf-8") as f:
        added = {t["content"]: t["id"] for t in json.load(f)["added_tokens"]}
    ids = dict(added)
    with open(os.path.join(args.init, "config.json"), encoding="utf-8") as f:
        ids["vocab_size"] = json.load(f)["thinker_config"]["text_config"]["vocab_size"]
    config = write_configs(out, ids, aligner=True)
    tok = Tok(out)
    mel = LogMel()

    seen = synth.voice_grid(synth.TRAIN_ACCENTS, synth.TRAIN_VARIANTS)
    unseen = synth.voice_grid(synth.HELDOUT_ACCENTS, synth.HELDOUT_VARIANTS)
    t_data = time.time()
    bank = word_bank(args.seed * 7919 + 3, args.bank_voices, seen)
    dev = [synth.make_aligned(np.random.default_rng([args.seed, 78, i]), seen if i % 2 else unseen, None, 2, 6) for i in range(30)]
    data_s = time.time() - t_data
    print(f"data: {len(bank)} word-bank voices, {data_s:.0f} s", flush=True)

    from safetensors.torch import load_file

    thinker = build_thinker(config, args.seed)
    state = load_file(os.path.join(args.init, "model.safetensors"))
    missing = thinker.load_state_dict({k[len("thinker."):]: v.float() for k, v in state.items() if not k.startswith("thinker.lm_head.")}, strict=False)
    assert set(missing.missing_keys) <= {"lm_head.weight"}, missing
    head = torch.nn.Linear(TEXT["hidden_size"], CLASSIFY_NUM, bias=False)
    thinker.train()
    params = list(thinker.parameters()) + list(head.parameters())
    params = [p for n, p in thinker.named_parameters() if not n.startswith("lm_head.")] + list(head.parameters())
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p is not head.weight], "lr_scale": 1.0}, {"params": [head.weight], "lr_scale": 3.0}],
        lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01,
    )
    sched = Schedule(args.lr, args.warmup, args.steps or 1000)
    rng = np.random.default_rng([args.seed, 3])
    classes = torch.arange(CLASSIFY_NUM).float()

    t0 = time.time()
    last_save = t0
    step = 0
    history = []
    while _budget(args, step, t0, sched):
        for g in opt.param_groups:
            g["lr"] = sched(step) * g["lr_scale"]
        feats, seqs = [], []
        for _ in range(args.batch):
            lang, voice, words = bank[int(rng.integers(len(bank)))]
            chosen = synth.random_words(rng, lang, 1, 10)
            audio, bounds = synth.join_aligned([(w, words[w]) for w in chosen], rng)
            wave = _min_len(synth.augment(audio, rng, edge_s=(0.0, 0.0)))
            feats.append(mel(wave))
            seqs.append(aligner_example(tok, audio_token_count(feats[-1].shape[1]), bounds))
        audio_h = audio_forward(thinker.audio_tower, feats)
        length = max(len(s[0]) for s in seqs)
        ids_t = torch.full((len(seqs), length), tok.id["<|endoftext|>"])
        am = torch.zeros(len(seqs), length, dtype=torch.long)
        for j, (s, _) in enumerate(seqs):
            ids_t[j, : len(s)] = torch.tensor(s)
            am[j, : len(s)] = 1
        h = decoder_forward(thinker, ids_t, am, audio_h, tok.id["<|audio_pad|>"])
        slots = h[ids_t == tok.id["<timestamp>"]]
        target = torch.tensor([t for _, times in seqs for t in times]) * 1000 / SEGMENT_MS
        # Soft targets around the true (fractional) class: neighbouring classes are nearly right.
        soft = torch.softmax(-((classes[None, :] - target[:, None]) ** 2) / (2 * 0.6**2), dim=-1)
        logits = head(slots)
        loss = -(soft * logits.log_softmax(-1)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            err = (logits.argmax(-1).float() - target).abs().mean().item() * SEGMENT_MS
            el = time.time() - t0
            print(f"step {step} loss {loss.item():.3f} train err {err:.0f} ms lr {sched(step):.2e} {el / step:.2f} s/step {el / 60:.1f} min", flush=True)
        if time.time() - last_save > args.save_every * 60:
            last_save = time.time()
            _save_align(out, thinker, head, tok, mel, dev, args, step, t0, data_s, history)
    _save_align(out, thinker, head, tok, mel, dev, args, step, t0, data_s, history, final=True)


@torch.no_grad()
def aligner_eval(thinker, head, tok, mel, dev) -> dict:
    thinker.eval()
    errs = []
    for u in dev:
        f = mel(_min_len(u.audio))
        a = audio_forward(thinker.audio_tower, [f])
        s, times = aligner_example(tok, a[0].shape[0], u.words)
        ids_t = torch.tensor([s])
        h = decoder_forward(thinker, ids_t, torch.ones_like(ids_t), a, tok.id["<|audio_pad|>"])
        pred = head(h[ids_t == tok.id["<timestamp>"]]).argmax(-1).float() * SEGMENT_MS / 1000
        errs += (pred - torch.tensor(times)).abs().tolist()
    thinker.train()
    return {"mean_ms": float(np.mean(errs)) * 1000, "median_ms": float(np.median(errs)) * 1000}


def _save_align(out, thinker, head, tok, mel, dev, args, step, t0, data_s, history, final=False) -> None:
    train_s = time.time() - t0
    ev = aligner_eval(thinker, head, tok, mel, dev)
    history.append({"step": step, "minutes": round(train_s / 60, 2), **{k: round(v, 1) for k, v in ev.items()}})
    print(f"checkpoint at step {step}: dev boundary error mean {ev['mean_ms']:.0f} ms median {ev['median_ms']:.0f} ms", flush=True)
    info = {
        "kind": "aligner",
        "final": final,
        "init": os.path.relpath(args.init, REPO),
        **run_info(args, step, train_s, data_s, history),
        "classify_num": CLASSIFY_NUM,
        "timestamp_segment_time_ms": SEGMENT_MS,
    }
    save_checkpoint(out, thinker_state(thinker, head), info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=["asr", "align"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--init", help="checkpoint to start from: the trained ASR model (align), an earlier stage (asr)")
    parser.add_argument("--minutes", type=float, default=0.0, help="training time budget (0 = none)")
    parser.add_argument("--steps", type=int, default=0, help="step budget (0 = none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--ctc-weight", type=float, default=0.5)
    parser.add_argument("--spec-augment", type=float, default=0.8, help="share of ASR examples with SpecAugment masks")
    parser.add_argument("--channel-augment", type=float, default=0.0, help="share of ASR clips band-limited or passed through a lossy codec")
    parser.add_argument("--long-share", type=float, default=0.1, help="share of ASR batches made of long recordings")
    parser.add_argument("--long-max", type=int, default=0, help="most sentences in a long recording (0: one group, 8)")
    parser.add_argument("--groups", type=int, default=2000, help="sentence groups (8 sentences, one voice)")
    parser.add_argument("--bank-voices", type=int, default=None, help="voice settings in the word bank")
    parser.add_argument("--cache-dir", default=str(REPO / "build" / "synth-cache"), help="where generated training audio is kept for reruns")
    parser.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    args = parser.parse_args(argv)
    if not args.minutes and not args.steps:
        parser.error("give --minutes and/or --steps")
    if args.kind == "asr":
        args.lr = args.lr or 2e-3
        args.warmup = args.warmup if args.warmup is not None else 150
        args.bank_voices = args.bank_voices or 500
        train_asr(args)
    else:
        if not args.init:
            parser.error("align needs --init (the trained ASR checkpoint)")
        args.lr = args.lr or 1e-3
        args.warmup = args.warmup if args.warmup is not None else 50
        args.bank_voices = args.bank_voices or 800
        train_align(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
