"""Corpus-level metrics for generated text: BLEU (sacrebleu) and ROUGE-1/2/L (rouge-score).

Both are reported on a 0-100 scale so that they read alike in logs and tables. Hypotheses and
references are detokenized strings, one reference per hypothesis.
"""

from jaxft.errors import UserError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references: "
            "generation metrics need exactly one reference per hypothesis"
        )
    if not hypotheses:
        # An empty corpus has no defined score; a silent 0 would hide an empty eval split.
        raise UserError("no hypotheses to score: the evaluation split is empty")


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU, 0-100, with sacrebleu's defaults (13a tokenization, exp smoothing)."""
    import sacrebleu

    _check(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge(hypotheses: list[str], references: list[str]) -> dict:
    """Mean F-measure of ROUGE-1, ROUGE-2 and ROUGE-L over the pairs, 0-100, Porter-stemmed."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)  # argument order: (target, prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    return {kind: 100.0 * total / len(hypotheses) for kind, total in totals.items()}


def seq2seq(hypotheses: list[str], references: list[str]) -> dict:
    """{"bleu", "rouge1", "rouge2", "rougeL"}, all 0-100."""
    return {"bleu": bleu(hypotheses, references), **rouge(hypotheses, references)}
