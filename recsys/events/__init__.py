"""What flows between the processes: event schemas, feedback weights, impressions and topics."""
