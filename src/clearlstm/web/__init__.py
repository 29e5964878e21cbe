"""The live explorer: its JSON API (`api`), the HTTP server (`server`) and the page
(`static/`). May import `clearlstm.viz` and below.
"""
