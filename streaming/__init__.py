"""The transaction event stream's consumer: ``mlplatform stream run`` applies events to the customers' event logs,
``mlplatform stream status`` shows how far behind it is (docs/streaming.md)."""
