"""The ground floor: what every chapter uses and nothing of pika_utils below it.

``store`` (content-keyed folders, hashes, atomic writes, checked sidecars), ``cached_tables``
(a computation's tables reused only while every sha256 matches), ``hub`` (is the
Hugging Face hub reachable, the offline flags), ``cpu`` (torch threads = free cores), ``metrics``
(AUROC, Spearman, pass@k, bootstrap intervals), ``scale`` (enough problems of each outcome to
decide a claim?), ``prices`` (the one cost model) and ``prompts``
(how a problem becomes a prompt). Chapters: all. Imports: nothing of pika_utils."""
