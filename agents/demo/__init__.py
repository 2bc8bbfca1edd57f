"""The demo that `make run` seeds (`manage.py seed_demo`): bundled notes on three topics and an
offline content pipeline over them (content_pipeline.yaml), with the agents it uses."""
