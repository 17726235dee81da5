"""Words in a tokenizer: the placeholder's rules and names, the initializer's ids, prompt expansion,
and the trigger word other tools make of a token.

Multi-vector words use diffusers' naming (``<tok>``, ``<tok>_1``, ...); a prompt naming ``<tok>``
is expanded to all its parts by :func:`expand_prompt`, which is idempotent, so it composes with
diffusers' own expansion in the pipelines that have one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from dti.core.errors import DTIError

MAX_TOKEN_LENGTH = 100  # characters: the token also names the A1111 file
#: Class words most vocabularies know, offered when an initializer is not a word of the model's.
COMMON_CLASS_WORDS = ("dog", "cat", "toy", "person", "car", "bag", "cup", "shoe", "bowl", "vase", "clock", "teapot")


# ------------------------------------------------------------------ the placeholder
def token_problem(token: Any) -> str | None:
    """What makes ``token`` unusable as a placeholder (read after its name), or None: it must be one
    printable word of sane length (a prompt is split at white space, so a token with a space could
    never be typed, and the token names the A1111 file)."""
    if not isinstance(token, str) or not token or any(ch.isspace() or not ch.isprintable() for ch in token):
        return f"{str(token)[:40]!r} must be a single word without spaces, e.g. '<my-dog>'"
    if len(token) > MAX_TOKEN_LENGTH:
        return f"{token[:40]!r}... is longer than {MAX_TOKEN_LENGTH} characters; use a short made-up word such as '<my-dog>'"
    return None


def check_token_text(token: Any, setting: str = "token") -> None:
    """Refuse, in one line naming ``setting``, a token that is not one word (:func:`token_problem`)."""
    found = token_problem(token)
    if found:
        raise DTIError("{" + setting + "} " + found, settings=[setting])


def placeholder_tokens(token: str, n_vectors: int) -> list[str]:
    """diffusers' naming of a multi-vector token: ``tok``, ``tok_1``, ..."""
    return [token] + [f"{token}_{i}" for i in range(1, n_vectors)]


def check_placeholder(tokenizer: Any, token: str, where: str = "the tokenizer") -> None:
    """Refuse a placeholder that is not one new word for ``tokenizer``."""
    check_token_text(token)
    vocab = tokenizer.get_vocab()
    if token in vocab or f"{token}</w>" in vocab:
        raise DTIError(
            f"{{token}} {token!r} is already in the vocabulary of {where}; choose a new word such as '<my-{token.strip('<>')}>'",
            settings=["token"],
        )
    if f"{token}_1" in vocab:
        clash = f"clashes with the existing token '{token}_1' in {where}; choose another name"
        raise DTIError(f"{{token}} {token!r} {clash}", settings=["token"])


# ------------------------------------------------------------------ the initializer
def word_pieces(tokenizer: Any, word: str) -> list[str]:
    """The pieces ``word`` becomes *inside a prompt* ("a dog" -> "▁dog" for SentencePiece
    tokenizers, where the bare word may split differently), by tokenizing "a word" and
    dropping the pieces of "a"."""
    lead = tokenizer.tokenize("a")
    pieces = tokenizer.tokenize(f"a {word}")
    if pieces[: len(lead)] == lead:
        return pieces[len(lead) :]
    return tokenizer.tokenize(word)


def _word_id(tokenizer: Any, word: str) -> int | None:
    """The one vocabulary id ``word`` has inside a prompt, or None (split, unknown, special or added)."""
    pieces = word_pieces(tokenizer, word)
    if len(pieces) != 1:
        return None
    (found,) = tokenizer.convert_tokens_to_ids(pieces)
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.added_tokens_encoder.values()) - special
    if found in special or found in added or found == tokenizer.unk_token_id:
        return None
    return int(found)


def known_words(tokenizer: Any, candidates: Sequence[str] = (), n: int = 3) -> list[str]:
    """Up to ``n`` class words this tokenizer knows as single words: ``candidates`` first (a model's
    own, e.g. from its ``dti.json``), then :data:`COMMON_CLASS_WORDS`."""
    out: list[str] = []
    for word in dict.fromkeys([*candidates, *COMMON_CLASS_WORDS]):
        if len(out) < n and _word_id(tokenizer, word) is not None:
            out.append(word)
    return out


def _offer(words: Sequence[str]) -> str:
    quoted = [f"'{w}'" for w in words]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" or {quoted[-1]}"


def initializer_ids(tokenizer: Any, text: str, where: str = "the tokenizer", candidates: Sequence[str] = ()) -> list[int]:
    """Vocabulary ids of the initializer, one per word ("stuffed animal" -> two vectors).

    Each word must be a single vocabulary entry as it appears in a prompt: a word the tokenizer
    splits into sub-word pieces, or maps to the unknown token, has no meaningful embedding to
    start from. The refusal offers words this tokenizer does know (``candidates`` first).
    """
    words = text.split() if text else []
    if not words:
        raise DTIError("{init} is missing; give the subject's class word, e.g. dog", settings=["init"])
    ids = []
    for word in words:
        found = _word_id(tokenizer, word)
        if found is None:
            pieces = word_pieces(tokenizer, word)
            shown = " + ".join(pieces) if pieces else "nothing"
            offer = known_words(tokenizer, candidates)
            fix = f"use a class word it knows, such as {_offer(offer)}" if offer else "use a word of its vocabulary"
            raise DTIError(
                f"{{init}} word {word!r} is not in the vocabulary of {where} (it tokenizes to {shown}); {fix}", settings=["init"]
            )
        ids.append(found)
    return ids


# ------------------------------------------------------------------ prompt expansion
def _expansion_pattern(token: str, n_vectors: int) -> re.Pattern[str]:
    parts = placeholder_tokens(token, n_vectors)
    expanded = r"\s*".join(re.escape(p) for p in parts)  # \s*: byte-level prompts join the parts (expand_prompt)
    # an already expanded run, or the bare token not followed by a part suffix ("_1")
    return re.compile(f"{expanded}|{re.escape(token)}(?!_\\d)")


def expand_prompt(prompt: str, words: dict[str, int], join_space: bool = False) -> str:
    """``<tok>`` -> ``<tok> <tok>_1 ...`` for every multi-vector word in ``words`` (token ->
    vector count). Idempotent: an expanded prompt is returned unchanged.

    ``join_space`` (byte-level BPE tokenizers, Qwen2): one space before each part is taken into it, as
    a byte-level word carries its space ("a dog" -> ``a Ġdog``): "a <tok>" becomes "a<tok>", which
    tokenizes to ``a <tok>`` where a space would be a lone ``Ġ`` piece. Only a space: a newline before
    the token (a chat template's ``user\\n``) stays its own piece, as before a word. (An added token's
    ``lstrip`` would swallow the newline too, shifting every token after it.) Joining is done once, on the
    text the tokenizer is given: it takes one space per call ("a  <tok>" -> "a <tok>", as "a  dog" is
    ``a Ġ Ġdog``)."""
    for token, n in words.items():
        if n > 1 and token in prompt:
            full = " ".join(placeholder_tokens(token, n))
            prompt = _expansion_pattern(token, n).sub(lambda _m, full=full: full, prompt)
    if join_space:
        for token in words:
            if f" {token}" in prompt:
                prompt = prompt.replace(f" {token}", token)
    return prompt


# ------------------------------------------------------------------ trigger words
def file_stem(token: str) -> str:
    """What A1111/ComfyUI users type: the token without brackets or characters they drop."""
    return re.sub(r"[^\w.-]", "", token) or "concept"


def _ordinary_word(tokenizer: Any, word: str) -> bool:
    """Whether ``word`` is one existing vocabulary token (as a whole word or as typed in a prompt)."""
    vocab = tokenizer.get_vocab()
    for form in dict.fromkeys((word, word.lower())):
        if any(f in vocab for f in (form, f"{form}</w>", f"\u2581{form}", f"\u0120{form}")):
            return True
    try:
        pieces = tokenizer.tokenize(word)
    except Exception:  # a tokenizer that cannot split the word has no such word either
        return False
    return len(pieces) == 1 and pieces[0] != getattr(tokenizer, "unk_token", None)


def check_trigger_word(token: str, tokenizers: Mapping[str, Any]) -> None:
    """Refuse a token whose file name (:func:`file_stem`: what A1111 users type, and the name kohya's
    scripts and ComfyUI's ``embedding:`` use) is an ordinary word of one of ``tokenizers`` (encoder
    name -> tokenizer): A1111 would put the concept in place of that word in every prompt."""
    stem = file_stem(token)
    for name, tokenizer in tokenizers.items():
        if _ordinary_word(tokenizer, stem):
            raise DTIError(
                f"the file name {stem!r} is the trigger word A1111 users type, and it is an ordinary word of the {name} tokenizer "
                f"(every '{stem}' in every prompt would become the concept); use a made-up name such as '<my-{stem}>'"
            )
