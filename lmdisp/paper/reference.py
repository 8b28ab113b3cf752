"""The paper's own numbers, for the report to show next to a run's (Liu et al., ICML 2026: Tables
2-5 as printed; averages over the 10 tasks in %, mean +- std over 3 seeds where given)."""

from __future__ import annotations

TASKS = ("anli_r2", "lambada_openai", "openbookqa", "piqa", "truthfulqa_mc2", "winogrande", "arc_easy",
         "arc_challenge", "medmcqa", "mmlu")

# Table 2: (method, average, std) per base model; base rows have no std.
TABLE2 = {
    "gpt2": [("base", 34.35, None), ("ce", 34.95, 0.11), ("noisy-embedding", 35.15, 0.06),
             ("active-forgetting", 35.36, 0.15), ("decorrelation", 35.41, 0.06), ("l2-repel", 35.42, 0.11),
             ("orthogonalization", 35.42, 0.19), ("dispersion", 35.61, 0.12)],
    "gpt2-medium": [("base", 37.80, None), ("ce", 38.55, 0.18), ("noisy-embedding", 38.16, 0.25),
                    ("active-forgetting", 38.13, 0.29), ("decorrelation", 38.81, 0.12), ("l2-repel", 38.61, 0.03),
                    ("orthogonalization", 38.74, 0.30), ("dispersion", 39.35, 0.15)],
    "qwen3-0.6b": [("base", 44.11, None), ("ce", 45.93, 0.37), ("noisy-embedding", 46.17, 0.28),
                   ("active-forgetting", 46.79, 0.27), ("decorrelation", 46.62, 0.25), ("l2-repel", 46.23, 0.04),
                   ("orthogonalization", 46.80, 0.20), ("dispersion", 47.45, 0.16)],
    "qwen3-1.7b": [("base", 53.18, None), ("ce", 54.57, 0.17), ("noisy-embedding", 53.78, 0.07),
                   ("active-forgetting", 53.89, 0.07), ("decorrelation", 55.01, 0.13), ("l2-repel", 46.22, 0.57),
                   ("orthogonalization", 55.04, 0.26), ("dispersion", 55.68, 0.21)],
}
# GPT-2 rows of Table 2, per task (the block the mini plan mirrors).
TABLE2_GPT2_TASKS = {
    "base": (34.4, 30.8, 15.6, 61.6, 40.3, 52.4, 42.0, 16.2, 25.4, 24.8),
    "ce": (34.0, 32.4, 16.4, 62.2, 43.6, 52.8, 41.6, 17.4, 24.2, 24.8),
    "dispersion": (34.8, 34.0, 16.6, 62.4, 44.2, 51.6, 42.6, 18.0, 26.6, 25.4),
}
TABLE3 = [("dispersion-early-half", 34.96, 0.20), ("dispersion-late-half", 35.37, 0.06)]
# Table 4: (lambda, tau) -> average.
TABLE4 = {(0.1, 1.0): 35.61, (0.01, 1.0): 35.36, (0.5, 1.0): 35.37, (1.0, 1.0): 35.29, (0.1, 0.1): 35.33,
          (0.1, 0.5): 35.42, (0.1, 2.0): 35.27}
TABLE4_ROWS = {"dispersion": (0.1, 1.0), "dispersion-lambda0.01": (0.01, 1.0), "dispersion-lambda0.5": (0.5, 1.0),
               "dispersion-lambda1.0": (1.0, 1.0), "dispersion-tau0.1": (0.1, 0.1), "dispersion-tau0.5": (0.1, 0.5),
               "dispersion-tau2.0": (0.1, 2.0)}
TABLE5 = {"ce": ((34.0, 24.0, 15.5, 64.5, 37.8, 58.0, 41.5, 22.0, 26.5, 24.6), 34.84),
          "dispersion": ((32.0, 27.5, 13.5, 68.5, 45.2, 54.5, 40.0, 24.5, 29.5, 24.9), 36.01)}
# Figures: the direction each shows (the paper gives no numbers for them).
FIGURES = {
    "fig2": "within each family, larger models condense less (Spearman/Kendall of cosine vs depth fall with size)",
    "figS2": "the same trend on wikitext, pubmed_qa, imdb and squad",
    "fig3": "with only the MLP width changed, wider models condense less (64 -> 4096: Spearman ~0.97 -> ~0.45)",
    "fig4": "condensation is highest at initialisation (Spearman 1.0 at S1-0) and falls through pre-training "
            "(about -0.45 at the base model)",
    "fig5": "distilled students condense like their bases",
    "fig7": "after ce mid-training the deep layers stay condensed; after dispersion they move towards 0",
}
SOURCE = "Liu et al., ICML 2026 (poster text: Tables 2-5; figures: the authors' assets/*.png)"
