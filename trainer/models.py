"""Models: the tiny random-initialised Qwen3-MoE test model and its locally trained tokenizer.

`build_tiny_model(out_dir)` writes a directory that `transformers.AutoModelForCausalLM`,
`transformers.AutoTokenizer` and vLLM all load: safetensors weights, a byte-level BPE tokenizer
trained here on text generated in-process, and a Qwen3-style chat template (`CHAT_TEMPLATE`) that
renders tools, reasoning, tool calls and tool responses. Nothing is downloaded; the same seed gives
the same files.

The chat template differs from Qwen3's on purpose in two ways, both for training: earlier turns keep
their reasoning, and every tool response is its own user turn, so rendering `messages[:k]` is a
prefix of rendering `messages[:k+1]` and assistant-only loss masks follow from prefix lengths (the
assistant part is also wrapped in `{% generation %}` for `return_assistant_tokens_mask`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "TinyModelConfig",
    "build_tiny_model",
    "build_tokenizer",
    "synthetic_corpus",
    "dataset_texts",
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "MARKUP_TOKENS",
    "DIGIT_GROUPS",
]

#: the `TinyModelConfig.digit_group` values: digits per number token, at most
DIGIT_GROUPS = (1, 2, 3)

#: tokens that end or pad sequences; `skip_special_tokens` removes them when decoding
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: markup the model writes itself; kept as single tokens but not "special", so decoding keeps them
MARKUP_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
)

# Whitespace is explicit: transformers compiles templates with trim_blocks and lstrip_blocks, and
# every piece of text is a quoted string so the rendering never depends on template indentation.
CHAT_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- (messages[0].content or '') + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n<tools>' }}
    {%- for tool in tools %}
        {%- set fn = tool.function if tool.function is defined else tool %}
        {%- set params = fn.parameters or {} %}
        {%- set required = params.required or [] %}
        {{- '\n' + fn.name + '(' }}
        {%- for pname, prop in (params.properties or {}) | dictsort %}
            {%- set ptype = prop.type if prop.type is string else (prop.type or ['any']) | join('|') %}
            {{- (', ' if not loop.first else '') + pname + ('' if pname in required else '?') + ': ' + ptype }}
        {%- endfor %}
        {{- '): ' + (fn.description or '') }}
    {%- endfor %}
    {{- '\n</tools>\nCall a function as <tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages and messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + (messages[0].content or '') + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- if not loop.first %}
            {{- raise_exception('a system message is only allowed as the first message') }}
        {%- endif %}
    {%- elif message.role == 'user' %}
        {{- '<|im_start|>user\n' + (message.content or '') + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- generation %}
            {%- set reasoning = message.reasoning_content or message.reasoning %}
            {%- if reasoning %}
                {{- '<think>\n' + reasoning + '\n</think>\n\n' }}
            {%- endif %}
            {{- message.content or '' }}
            {%- for call in (message.tool_calls or []) %}
                {%- set fn = call.function if call.function is defined else call %}
                {%- if message.content or not loop.first %}
                    {{- '\n' }}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' }}
                {%- if fn.arguments is string %}
                    {{- fn.arguments }}
                {%- else %}
                    {{- fn.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- elif message.role == 'tool' %}
        {{- '<|im_start|>user\n<tool_response>\n' + (message.content or '') + '\n</tool_response><|im_end|>\n' }}
    {%- else %}
        {{- raise_exception('unknown message role ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
""".strip()


@dataclass(frozen=True, kw_only=True, slots=True)
class TinyModelConfig:
    """Shape of the tiny Qwen3-MoE test model (about 2.5M parameters with the defaults).

    head_dim is `hidden_size // num_attention_heads` and must be 64 or more: vLLM's CPU attention
    rejects 16. `vocab_size` is the BPE target; the model's vocabulary is the tokenizer's real size
    (smaller when the corpus runs out of merges), so every logit decodes to a token.
    """

    seed: int = 0
    vocab_size: int = 4096  # BPE merges target, incl. special and markup tokens
    hidden_size: int = 128
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 64
    max_position_embeddings: int = 4096
    corpus_sentences: int = 20_000  # synthetic training text for the tokenizer
    dtype: str = "float32"  # of the saved weights; vLLM and transformers cast on load
    #: share the input embedding with the LM head: copying a name or an id from the prompt into a
    #: tool call is then the identity map, which a tiny model learns from few examples
    tie_word_embeddings: bool = True
    #: digits per number token. 1 (default): every digit is a token, as in Qwen's tokenizer, so an
    #: id such as "film/000037" is made of tokens every id shares. 2 or 3: a run of digits is
    #: split left to right into groups of up to that many ("24430058" -> "244", "300", "58"), as
    #: Llama 3's and GPT-4's `\p{N}{1,3}` pre-tokenizer does, and every group is a token of its
    #: own, added on top of `vocab_size` (3: 1,100 tokens); the digits of an id (after a "/")
    #: stay one token each, so ids are copied as with 1. A tiny model copies a 5-8 digit
    #: number from an observation into code or an answer as 2-3 distinct tokens instead of 5-8
    #: tokens of a 10-letter alphabet, which its attention tells apart by position only
    #: (compute tasks, see `benchmarks/learning.py --digit-group`).
    digit_group: int = 1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.head_dim < 64:
            raise ValueError(f"head_dim {self.head_dim} < 64: vLLM's CPU attention rejects it")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok {self.num_experts_per_tok} must be in 1..num_experts {self.num_experts}"
            )
        min_vocab = 256 + len(SPECIAL_TOKENS) + len(MARKUP_TOKENS)
        if self.vocab_size < min_vocab:
            raise ValueError(
                f"vocab_size {self.vocab_size} must be at least {min_vocab} (bytes + markup)"
            )
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype {self.dtype!r} must be float32, bfloat16 or float16")
        if self.digit_group not in DIGIT_GROUPS:
            raise ValueError(
                f"digit_group {self.digit_group} must be one of {', '.join(map(str, DIGIT_GROUPS))}"
            )
        for name in ("num_hidden_layers", "moe_intermediate_size", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# --------------------------------------------------------------------------- synthetic text

_NOUNS = [
    "river",
    "city",
    "film",
    "director",
    "actor",
    "country",
    "language",
    "river",
    "company",
    "album",
    "song",
    "author",
    "book",
    "team",
    "player",
    "coach",
    "village",
    "mountain",
    "island",
    "museum",
    "painting",
    "composer",
    "river",
    "school",
    "student",
    "teacher",
    "river",
    "planet",
    "star",
    "ship",
    "captain",
    "station",
    "market",
    "bank",
    "river",
    "bridge",
    "tower",
    "garden",
    "forest",
    "lake",
]
_VERBS = [
    "directed",
    "founded",
    "wrote",
    "played",
    "visited",
    "built",
    "painted",
    "composed",
    "discovered",
    "married",
    "studied",
    "crossed",
    "taught",
    "sold",
    "bought",
    "named",
    "joined",
    "left",
    "won",
    "lost",
    "opened",
    "closed",
    "reached",
    "followed",
]
_ADJS = [
    "old",
    "new",
    "small",
    "large",
    "famous",
    "quiet",
    "early",
    "late",
    "northern",
    "southern",
    "first",
    "last",
    "red",
    "blue",
]
_NAMES = [
    "Alice",
    "Bruno",
    "Chen",
    "Dana",
    "Emil",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Julia",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Viktor",
    "Wen",
    "Xenia",
    "Yusuf",
    "Zora",
]
_PLACES = [
    "Lisbon",
    "Quito",
    "Nairobi",
    "Oslo",
    "Hanoi",
    "Lima",
    "Dakar",
    "Perth",
    "Riga",
    "Tunis",
    "Accra",
    "Bergen",
]
_RELATIONS = [
    "directed_by",
    "born_in",
    "capital_of",
    "located_in",
    "member_of",
    "written_by",
    "spouse_of",
    "part_of",
    "citizen_of",
]
_TOOLS = ("search_entities", "get_relations", "get_entity", "python")


_TEMPLATE_TEXT = (
    "<|im_start|>system\n<|im_start|>user\n<|im_start|>assistant\n# Tools\n<tools>\n</tools>\n"
    'Call a function as <tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call> string integer number boolean array object null "
    "<tool_response>\n</tool_response> <think>\n</think>\n\n"
)


def _sentence(rng: random.Random) -> str:
    kind = rng.randrange(6)
    name, place = rng.choice(_NAMES), rng.choice(_PLACES)
    noun, verb, adj = rng.choice(_NOUNS), rng.choice(_VERBS), rng.choice(_ADJS)
    year = rng.randrange(1700, 2030)
    if kind == 0:
        return f"{name} {verb} the {adj} {noun} in {place} in {year}."
    if kind == 1:
        return f"Which {noun} was {verb} by {name}? The answer is the {adj} {noun} of {place}."
    if kind == 2:
        return f"The {noun} of {place} is {adj}, and {name} {verb} it {rng.randrange(2, 99)} times."
    if kind == 3:
        rel = rng.choice(_RELATIONS)
        return f"/m/{rng.randrange(16**5):05x} {rel} /m/{rng.randrange(16**5):05x}"
    if kind == 4:
        return f"<answer>{name} {rng.choice(_NAMES)}</answer>"
    return f"I need the {rng.choice(_RELATIONS)} of {name}."


def _tool_snippet(rng: random.Random) -> str:
    tool = rng.choice(_TOOLS)
    if tool == "search_entities":
        args: dict[str, Any] = {
            "query": rng.choice(_NAMES + _PLACES),
            "limit": rng.randrange(1, 20),
        }
    elif tool == "get_relations":
        args = {"entity_id": f"/m/{rng.randrange(16**5):05x}", "relation": rng.choice(_RELATIONS)}
    elif tool == "get_entity":
        args = {"entity_id": f"/m/{rng.randrange(16**5):05x}"}
    else:
        args = {"code": f"print({rng.randrange(100)} + {rng.randrange(100)})"}
    call = json.dumps({"name": tool, "arguments": args})
    result = json.dumps(
        [
            {
                "id": f"/m/{rng.randrange(16**5):05x}",
                "name": rng.choice(_NAMES),
                "type": rng.choice(_NOUNS),
            }
        ]
    )
    return f"<tool_call>\n{call}\n</tool_call>\n<tool_response>\n{result}\n</tool_response>"


def synthetic_corpus(n_sentences: int, *, seed: int = 0) -> list[str]:
    """English-like sentences, ids, JSON tool calls and tool responses for training the tokenizer.

    >>> len(synthetic_corpus(3, seed=1))
    3
    """
    rng = random.Random(seed)
    return [
        _tool_snippet(rng) if rng.random() < 0.25 else _sentence(rng) for _ in range(n_sentences)
    ]


def dataset_texts(data_dir: str | Path, *, limit: int = 20_000) -> list[str]:
    """The text of up to `limit` rows of a DESIGN section 5 dataset, for training a tokenizer.

    Every message's content and reasoning, every tool call as the model writes it, and every
    offered tool's name and description, so the words, names, ids and JSON an agent reads and
    writes in that data get tokens of their own.

    >>> dataset_texts("/nonexistent")
    Traceback (most recent call last):
    ValueError: dataset directory /nonexistent has no data/*.parquet files: pass a directory written by `kag export`
    """
    import pyarrow.parquet as pq

    files = sorted(Path(data_dir).glob("data/*.parquet"))
    if not files:
        raise ValueError(
            f"dataset directory {data_dir} has no data/*.parquet files: pass a directory "
            "written by `kag export`"
        )
    texts: list[str] = []
    seen_tools: set[str] = set()
    rows = 0
    for path in files:
        table = pq.read_table(path, columns=["messages", "tools"])
        for messages, tools in zip(
            table.column("messages").to_pylist(), table.column("tools").to_pylist(), strict=True
        ):
            if rows >= limit:
                return texts
            rows += 1
            if tools and tools not in seen_tools:
                seen_tools.add(tools)
                for spec in json.loads(tools):
                    fn = spec.get("function", spec)
                    texts.append(f"{fn.get('name', '')}(): {fn.get('description', '')}")
            for m in messages:
                texts.extend(t for t in (m.get("content"), m.get("reasoning_content")) if t)
                for call in m.get("tool_calls") or ():
                    fn = call["function"]
                    texts.append(f'{{"name": "{fn["name"]}", "arguments": {fn["arguments"]}}}')
    return texts


# --------------------------------------------------------------------------- builders


#: an id's number part (`film/000037`) longer than this is grouped like a number
_ID_DIGITS = 24


def _digit_group_pattern(group: int) -> str:
    """The pre-tokenizer pattern of `TinyModelConfig.digit_group` > 1: every digit that follows
    a "/" and the digits after it (an id's digits) alone, other runs of digits left to right in
    groups of up to `group` ("24430058" -> "244", "300", "58"), as Llama 3's `\\p{N}{1,3}` does.

    >>> import re; [m.group() for m in re.finditer(_digit_group_pattern(3), "film/0037 24430058")]
    ['0', '0', '3', '7', '244', '300', '58']
    """
    # a fixed-length look-behind per position in the id: Oniguruma (the tokenizers' regex
    # engine) takes alternatives of different fixed lengths, not a variable-length one
    alone = "|".join(rf"(?<=/\d{{{k}}})\d" for k in range(_ID_DIGITS))
    return rf"{alone}|\d{{1,{group}}}"


def _digit_group_merges(tokenizer_json: str, group: int) -> str:
    """`tokenizer_json` (a trained byte-level BPE) with a token and merges for every group of 2 up
    to `group` digits, so the pre-tokenizer's digit groups each encode as one token whichever
    merge applies first ("244" from "24"+"4" or "2"+"44")."""
    data = json.loads(tokenizer_json)
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = [
        tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]
    ]
    known = set(merges)
    next_id = max(vocab.values()) + 1
    for n in range(2, group + 1):
        for i in range(10**n):
            text = f"{i:0{n}d}"
            if text not in vocab:
                vocab[text] = next_id
                next_id += 1
            for pair in {(text[:-1], text[-1]), (text[0], text[1:])}:
                if pair not in known:
                    known.add(pair)
                    merges.append(pair)
    data["model"]["merges"] = [list(m) for m in merges]
    return json.dumps(data)


def build_tokenizer(
    config: TinyModelConfig = TinyModelConfig(),
    *,
    texts: Sequence[str] = (),
    vocabulary: Sequence[str] = (),
) -> Any:
    """Train a byte-level BPE tokenizer on `synthetic_corpus` + `texts`, with the chat template.

    `texts` is the domain's own text (for a graph: its entity names, ids, types and relation names,
    see `kag model tiny --graph`): with it the words agents read and write get tokens of their own.

    `vocabulary` is a domain vocabulary of whole tokens (for a graph: every entity name and id and
    every relation name), as entity-aware language models keep one: a name the agent copies from the
    question into a tool call, or an id from an observation into the next call, is then one token,
    which a small model copies with one attention lookup instead of spelling it out piece by piece.
    Each entry matches only as a whole word; text outside it is byte-level BPE as usual.

    `config.digit_group` > 1 adds a token for every group of 2 up to that many digits, which the
    digits of a number split into (an id's digits stay one token each):

    >>> tok = build_tokenizer(TinyModelConfig(vocab_size=512, digit_group=3))  # doctest: +SKIP
    >>> [tok.decode([i]) for i in tok.encode("/000037: 24430058")]             # doctest: +SKIP
    ['/', '0', '0', '0', '0', '3', '7', ':', ' ', '244', '300', '58']

    Returns a `transformers.PreTrainedTokenizerFast` whose eos is `<|im_end|>` and pad is
    `<|endoftext|>`; markup tokens such as `<tool_call>` encode as one id each.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # digits one by one: an id such as "film/000037" is then made of tokens every id shares,
    # which a model copies digit by digit; with `digit_group` > 1 the digits of a number (not
    # of an id) are split in groups instead, each group a token (see `_digit_group_merges`)
    digits = (
        pre_tokenizers.Digits(individual_digits=True)
        if config.digit_group == 1
        else pre_tokenizers.Split(Regex(_digit_group_pattern(config.digit_group)), "isolated")
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [digits, pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size - len(MARKUP_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = synthetic_corpus(config.corpus_sentences, seed=config.seed) + list(texts)
    # the chat template's own words (roles, the tools header, JSON-schema types), which every
    # conversation repeats, get tokens of their own too
    corpus += [_TEMPLATE_TEXT] * 64
    tok.train_from_iterator(corpus, trainer=trainer)
    if config.digit_group > 1:
        tok = Tokenizer.from_str(_digit_group_merges(tok.to_str(), config.digit_group))
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    domain = [t for t in dict.fromkeys(vocabulary) if t.strip() and t not in MARKUP_TOKENS]
    tok.add_tokens(
        [AddedToken(t, special=False, normalized=False, single_word=True) for t in domain]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(
    out_dir: str | Path,
    *,
    config: TinyModelConfig = TinyModelConfig(),
    texts: Sequence[str] = (),
    vocabulary: Sequence[str] = (),
) -> Path:
    """Write the tiny Qwen3-MoE model, tokenizer and chat template to `out_dir`; return its path.

    `texts` joins the tokenizer's training corpus and `vocabulary` its whole tokens (see
    `build_tokenizer`).

    >>> path = build_tiny_model("/tmp/tiny")                                   # doctest: +SKIP
    >>> AutoModelForCausalLM.from_pretrained(path).num_parameters() < 5_000_000  # doctest: +SKIP
    True
    """
    import torch
    from transformers import GenerationConfig, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"model output path {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(config, texts=texts, vocabulary=vocabulary)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model_config = Qwen3MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.moe_intermediate_size * 2,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        num_experts=config.num_experts,
        num_experts_per_tok=config.num_experts_per_tok,
        moe_intermediate_size=config.moe_intermediate_size,
        norm_topk_prob=True,
        tie_word_embeddings=config.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        head_dim=config.head_dim,
    )
    # fork_rng keeps the caller's global RNG untouched; the seed alone fixes the weights
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = Qwen3MoeForCausalLM(model_config)
    model = model.to(getattr(torch, config.dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, do_sample=True, temperature=1.0
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "kag_tiny_model.json").write_text(
        json.dumps(asdict(config), indent=2, sort_keys=True) + "\n"
    )
    return out
