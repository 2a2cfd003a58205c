"""Online anomaly detectors for crisis signals, one per file, river style.

Every detector scores a bucket (``score_one``) before learning it
(``learn_one``) and returns a calibrated ``1 − p``, so one threshold
(``registry.threshold_for``) means the same on every series and signal:

- ``volume.SeasonalCountDetector`` — mention counts and negative counts:
  seasonal negative binomial × recent-record (extreme value) test;
- ``share.ShareDetector`` — share of negative mentions: beta-binomial with a
  minimum-volume floor, bucket and pooled three-hour scales;
- ``sentiment.SentimentDetector`` — mean sentiment, lower tail, for the slow
  burn: bucket and pooled three-hour scales, floor;
- ``reach.ReachDetector`` — largest audience behind a negative mention:
  Pareto record test with an absolute floor;
- ``terms.TermDetector`` — emerging crisis words and trending terms against
  their own share, bounded memory, YAML crisis lexicon (``lexicon.yaml``).

``registry.make`` builds them for the pipeline; ``bench/bench_detection.py``
measures them (NAB scores, µs per update, bytes per series).
"""
