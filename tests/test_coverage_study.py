"""Coverage study of the subject-level bootstrap (issue 18, §4): intervals that neither overstate
nor understate, shown on simulated protocols with subject effects on genuine **and impostor** scores.

Each trial draws a protocol of 150 subjects with 4 templates each: all 900 within-subject template
pairs (genuine: μ + b_s + (c_t1 + c_t2)/2 + ε) and 20,000 impostor pairs between two subjects'
templates (a_s1 + a_s2 + d_t1 + d_t2 + ε: a subject's "look-alike" effect a_s enters every impostor
pair it is in, so impostor pairs are not independent either).  The population TAR at FAR 1e-2 and
1e-3 is known in closed form (both classes are normal).  The 95 % percentile interval of 200
subject-level replicates (:func:`facetrust.evaluate.bootstrap.bootstrap_tar`, each drawn subject
with all its templates, impostor pairs weighted m_s1·m_s2) is checked for covering it.

Measured (this test, 200 trials, seed 2026, one core of a shared 2-core VM, 56 s): coverage 0.965 ± 0.013 at FAR 1e-2
and 0.945 ± 0.016 at FAR 1e-3 (binomial standard errors).  At FAR 1e-3 about 20 impostor pairs
decide the threshold (10/n_impostor = 5e-4, so it is resolved).
"""

import numpy as np
import pytest
from scipy.stats import norm

from facetrust.evaluate.bootstrap import bootstrap_tar, cluster_design, percentile_interval

SUBJECTS, TEMPLATES, IMPOSTORS = 150, 4, 20000
MU, SB, SC, SE_G = 3.2, 0.6, 0.4, 0.6  # genuine: mean, subject, template, noise SDs
SA, SD, SE_I = 0.35, 0.3, 0.7  # impostor: subject, template, noise SDs
FARS = (1e-2, 1e-3)
TRIALS, RESAMPLES = 200, 200


def population_tar(far: float) -> float:
    impostor_sd = np.sqrt(2 * SA**2 + 2 * SD**2 + SE_I**2)
    genuine_sd = np.sqrt(SB**2 + SC**2 / 2 + SE_G**2)
    return float(1 - norm.cdf((impostor_sd * norm.ppf(1 - far) - MU) / genuine_sd))


def simulate(rng):
    subject = np.repeat(np.arange(SUBJECTS), TEMPLATES)
    b, a = rng.normal(0, SB, SUBJECTS), rng.normal(0, SA, SUBJECTS)
    c, d = rng.normal(0, SC, subject.size), rng.normal(0, SD, subject.size)
    i, j = np.triu_indices(TEMPLATES, 1)
    gi = (np.arange(SUBJECTS)[:, None] * TEMPLATES + i).ravel()
    gj = (np.arange(SUBJECTS)[:, None] * TEMPLATES + j).ravel()
    genuine = MU + b[subject[gi]] + (c[gi] + c[gj]) / 2 + rng.normal(0, SE_G, gi.size)
    t1, t2 = rng.integers(0, subject.size, 3 * IMPOSTORS), rng.integers(0, subject.size, 3 * IMPOSTORS)
    keep = subject[t1] != subject[t2]
    t1, t2 = t1[keep][:IMPOSTORS], t2[keep][:IMPOSTORS]
    impostor = a[subject[t1]] + a[subject[t2]] + d[t1] + d[t2] + rng.normal(0, SE_I, t1.size)
    pairs = np.r_[np.stack([gi, gj], 1), np.stack([t1, t2], 1)]
    labels = np.r_[np.ones(gi.size), np.zeros(t1.size)].astype(np.int8)
    return pairs, labels, np.r_[genuine, impostor], dict(enumerate(subject.tolist()))


@pytest.mark.slow
def test_subject_level_intervals_cover_the_population_tar_at_low_far():
    truth = [population_tar(far) for far in FARS]
    rng = np.random.default_rng(2026)
    covered = np.zeros(len(FARS))
    for trial in range(TRIALS):
        pairs, labels, scores, subjects = simulate(rng)
        replicates = bootstrap_tar(cluster_design(pairs, labels, subjects), scores, FARS, n_resamples=RESAMPLES,
                                   seed=trial)
        for k, value in enumerate(truth):
            lo, hi = percentile_interval(replicates[:, k])
            covered[k] += lo <= value <= hi
    coverage = covered / TRIALS
    standard_error = np.sqrt(coverage * (1 - coverage) / TRIALS)
    print(f"coverage at FAR {FARS}: {coverage.round(3).tolist()} ± {standard_error.round(3).tolist()}")
    assert ((coverage >= 0.90) & (coverage <= 0.99)).all(), coverage
