"""Does confidence mean something? Word confidence against word errors, language probability
against language-identification errors, on a scored test set.

- Word level: each row's hypothesis words (the ASR chunks' ``words``, with ``confidence``) and
  the reference's words are normalized one by one with the scoring normalizer
  (pipeline/score/wer.py) and aligned (jiwer's Levenshtein alignment); a word in an ``equal`` pair is right, one
  in a substitution or insertion is wrong. The number reported is the AUROC of ``1 - confidence``
  as a detector of wrong words: the probability that a random wrong word scores lower than a
  random right one (ties count half); 0.5 = no information, 1 = perfect.
- Row level: rows whose manifest names the language; ``language_probability`` of rows where the
  detected language is wrong against rows where it is right (means and AUROC, as above).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import jiwer

from pipeline.languages import is_detect, language_key
from pipeline.score.wer import normalize_text, unit_for_language


def auroc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """P(score of a random wrong item < score of a random right item), ties counting half: the
    area under the ROC curve of "low score = wrong" (Mann-Whitney U / (n_right x n_wrong)).
    None when either group is empty. O((n + m) log(n + m))."""
    if not right or not wrong:
        return None
    pooled = sorted([(v, 0) for v in wrong] + [(v, 1) for v in right])
    # Average ranks over ties, then U of the right group.
    ranks = [0.0] * len(pooled)
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, (_, is_right) in zip(ranks, pooled) if is_right)
    n_right, n_wrong = len(right), len(wrong)
    u = rank_sum - n_right * (n_right + 1) / 2
    return u / (n_right * n_wrong)


def word_outcomes(reference: str, words: Sequence[dict], language: str | None) -> list[tuple[float, bool]]:
    """``(confidence, right)`` for each hypothesis word with a confidence, against ``reference``.

    ``words``: ``[{"text", "confidence"}]`` in order. Words that normalize to nothing
    (punctuation) are left out; a word that normalizes to several tokens is right only if all are.
    Languages scored by characters (pipeline/score/wer.py) are compared character by character.
    """
    by_char = unit_for_language(language) == "char"
    # Word by word on both sides: normalizing the whole reference would join spelled numbers
    # ("two one" -> "21") that the hypothesis's single words ("two", "one") never match.
    ref_tokens = []
    for word in reference.split():
        norm = normalize_text(word, language)
        ref_tokens += list(norm.replace(" ", "")) if by_char else norm.split()
    hyp_tokens: list[str] = []
    owner: list[int] = []
    for k, w in enumerate(words):
        norm = normalize_text(w.get("text") or "", language)
        tokens = list(norm.replace(" ", "")) if by_char else norm.split()
        hyp_tokens += tokens
        owner += [k] * len(tokens)
    if not hyp_tokens:
        return []
    right_token = [False] * len(hyp_tokens)
    if ref_tokens:
        out = jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens))
        for chunk in out.alignments[0]:
            if chunk.type == "equal":
                for h in range(chunk.hyp_start_idx, chunk.hyp_end_idx):
                    right_token[h] = True
    result: dict[int, bool] = {}
    for h, k in enumerate(owner):
        result[k] = result.get(k, True) and right_token[h]
    return [(float(words[k]["confidence"]), ok) for k, ok in sorted(result.items()) if words[k].get("confidence") is not None]


def confidence_report(rows: Iterable[dict]) -> dict:
    """Word-confidence AUROC and language-probability comparison over result rows.

    ``rows``: result rows with ``reference``, ``language``, ``language_hint``,
    ``language_probability`` and ``asr_chunks`` (each with ``words``). Returns
    ``{"words": {"right", "wrong", "mean_confidence_right", "mean_confidence_wrong", "auroc"},
    "language": {"rows_right", "rows_wrong", "mean_probability_right", "mean_probability_wrong",
    "auroc"}}``; means and AUROC are None where a group is empty.
    """
    right: list[float] = []
    wrong: list[float] = []
    lang_right: list[float] = []
    lang_wrong: list[float] = []
    for row in rows:
        if row.get("error") is not None:
            continue
        hint = row.get("language_hint")
        scoring_language = row.get("language") if is_detect(hint) else hint
        words = [w for chunk in row.get("asr_chunks") or () for w in (chunk.get("words") or ())]
        if row.get("reference") is not None and words:
            for conf, ok in word_outcomes(row["reference"], words, scoring_language):
                (right if ok else wrong).append(conf)
        p = row.get("language_probability")
        if not is_detect(hint) and row.get("language") is not None and p is not None:
            (lang_right if language_key(row["language"]) == language_key(hint) else lang_wrong).append(float(p))

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "words": {
            "right": len(right),
            "wrong": len(wrong),
            "mean_confidence_right": mean(right),
            "mean_confidence_wrong": mean(wrong),
            "auroc": auroc(right, wrong),
        },
        "language": {
            "rows_right": len(lang_right),
            "rows_wrong": len(lang_wrong),
            "mean_probability_right": mean(lang_right),
            "mean_probability_wrong": mean(lang_wrong),
            "auroc": auroc(lang_right, lang_wrong),
        },
    }
