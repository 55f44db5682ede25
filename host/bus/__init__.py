"""One RS-485 bus on pyserial (timeouts from baud and frame sizes, echo, reconnect), and
buses A and B as one redundant link."""
