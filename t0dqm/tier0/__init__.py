"""Tier-0 adapters: EOS dump reader, streamer names, run_stream_done client, dataset names."""
