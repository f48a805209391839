"""The stages (seqkd, warmup, train, offpolicy) over one shared loop; see ``loop.run_stage``."""
