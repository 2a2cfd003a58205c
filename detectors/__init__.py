"""Online anomaly detectors for crisis signals, one per file, river style.

Every detector is a bank (``base.Bank``): one signal for many series, as
arrays indexed by slot, so a tick of every series is one vectorised
``score`` then ``learn`` (``score_one`` / ``learn_one`` drive a single series).
Scores are a calibrated ``1 − p``, so one threshold
(``registry.threshold_for``) means the same on every series and signal:

- ``volume.SeasonalCountDetector`` — mention counts and negative counts:
  seasonal negative binomial × recent-record (extreme value) test;
- ``share.ShareDetector`` — share of negative mentions: beta-binomial with a
  minimum-volume floor, bucket, half-hour and three-hour scales;
- ``sentiment.SentimentDetector`` — mean sentiment, lower tail, for the slow
  burn: bucket, half-hour and three-hour scales, floor;
- ``reach.ReachDetector`` — largest audience behind a negative mention:
  Pareto record test with an absolute floor;
- ``terms.TermDetector`` — emerging crisis words and trending terms against
  their own share, bounded memory, YAML crisis lexicon (``lexicon.yaml``).

``registry.make`` builds them for the pipeline; ``bench/bench_detection.py``
measures them (NAB scores, ms per tick at one and 10,000 series, bytes per series).
"""
