"""The predictive controller: each tick it reads the fleet into the telemetry store, keeps
the forecasts and fault risks, plans from the live site when a trigger or the period
says so, and executes the plan's moves and rankings through the one move, journalled."""
