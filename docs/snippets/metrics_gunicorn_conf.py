"""gunicorn settings for realip's counters with several workers (gunicorn -c metrics_gunicorn_conf.py).

PROMETHEUS_MULTIPROC_DIR names a directory the workers can write; set it in
the environment before gunicorn starts. Shown in docs/downstream/metrics.md;
used by tests/test_metrics.py.
"""

# [conf]
import os


def on_starting(server: object) -> None:
    """Before any worker: forget the counts of the previous run (prometheus_client's rule)."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.remove(os.path.join(directory, name))


# [/conf]
