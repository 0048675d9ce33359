"""Benchmark study: rescue transforms vs peers (peers.py); autotune with/without rescue."""
