"""Conveyor's shared contract: what the gateway and every worker agree on."""
