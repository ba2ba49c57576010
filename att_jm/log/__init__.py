"""The log's format, shared by the service, its relay and the audit tool: stored rows and how
they are read (`rows`), decoded (`records`), hashed into seals (`chain`), published
(`messages`), encoded (`transcoder`), and what the end of the log says of the last stop
(`tail`). Depends on the domain only."""
