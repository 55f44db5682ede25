# Protection limits (SPEC.md, SET_LIMITS): their fields, the board's ratings they must
# coordinate with, and the check of a set of limits against them. At start-up and for
# SET_LIMITS, never per block.

FIELDS = ("curve", "pickup_mA", "tms_milli", "instantaneous_mA", "undervoltage_mV", "overvoltage_mV",
          "frequency_low_cHz", "frequency_high_cHz", "thd_max_dpct")


def ratings(board):
    """(relay rated current, breaking capacity, input fuse) in mA: the weakest input's.
    A board description without the first or the last falls back to the stricter known one."""
    breaking = board["breaking_mA"]
    rated = board.get("rated_mA", breaking)
    return rated, breaking, board.get("fuse_mA", rated)


def problem(board, f):
    """The 1-based position of the first field of SET_LIMITS this board cannot honour, or 0."""
    rated, breaking, fuse = ratings(board)
    pickup = f["pickup_mA"]
    instantaneous = f["instantaneous_mA"]
    measurable = int(board["mV_per_count"] * 8191 / 1.4142)  # RMS of a full-scale sine
    for position, problem in ((1, f["curve"] not in (1, 2, 3)),
                              (2, not 0 < pickup <= rated or pickup > fuse or pickup > breaking),
                              (3, not 50 <= f["tms_milli"] <= 1500),
                              (4, instantaneous <= pickup or instantaneous > breaking),
                              (6, f["undervoltage_mV"] >= f["overvoltage_mV"] or f["overvoltage_mV"] > measurable),
                              (8, f["frequency_low_cHz"] >= f["frequency_high_cHz"]),
                              (9, not 0 < f["thd_max_dpct"] <= 1000)):
        if problem:
            return position
    return 0
