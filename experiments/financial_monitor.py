"""Financial sentiment monitor: the PhraseBank sentiment model of financial_sentiment.py, run over a news stream.

    mgpt train experiments/financial_monitor.py --set data.train_file=FinancialPhraseBank-v1.0/Sentences_AllAgree.txt \
        --workdir runs/financial_monitor
    mgpt monitor experiments/financial_monitor.py --set data.train_file=FinancialPhraseBank-v1.0/Sentences_AllAgree.txt \
        --checkpoint runs/financial_monitor --input stream.jsonl --output runs/financial_monitor/monitor \
        --period day --baseline-periods 7 --margin 0.15 --min-items 10

The stream is JSON Lines, one {"time": ISO-8601, "text": ..., "topic": ...} per line. Lines without a topic
take the label of a topic classifier: add `--topic-experiment experiments/bbc_news_topics.py --topic-checkpoint
runs/bbc_news_topics`. `mgpt monitor` writes monitor.json (negative / neutral / positive shares per period and
topic, baselines, alerts), monitor_items.jsonl and monitor_timeline.png (mgpt.apps.monitor).
"""

import dataclasses
import os

from mgpt.config import load_experiment

SENTIMENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "financial_sentiment.py")


def get_config():
    return dataclasses.replace(load_experiment(SENTIMENT), name="financial_monitor")
