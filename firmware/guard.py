# Admission of a request on the tap (SPEC.md, "Addressing", "Authentication",
# "Epoch" and "Retries and duplicates"). Runs before any handler: a frame that is
# not admitted changes nothing. Once a signed request has consumed its counter
# (`consumed`), its answer, whatever it is, goes to remember(), so a retry is answered
# again, not executed again. A refusal before that is never remembered: a replayed old
# frame must not push a genuine answer out of the cache.

from micropython import const

from protocol import catalog

ADMIT = const(0)  # run the handler
IGNORE = const(-1)  # not for this tap, or a broadcast that is not answered
CACHED = const(-2)  # a retry: send cached_answer()
# any positive value: refuse with NAK and that error code, `detail` beside it

_HEADER_LEN = const(7)  # = catalog.HEADER_LEN
_AUTH_LEN = const(24)  # = catalog.AUTH_LEN
_TAG_LEN = const(16)  # = catalog.TAG_LEN
_CACHE = const(4)  # = catalog.DUPLICATE_CACHE_SIZE


def _u32(buf, at):
    return buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16) | (buf[at + 3] << 24)


class Guard:
    """Checks header, addressing, tag, epoch and counter of every incoming request."""

    def __init__(self, messages, unique_id, address, hmac, epoch, counter):
        self.messages = messages  # protocol.layout.load()
        self.unique_id = unique_id
        self.address = address
        self.hmac = hmac
        self.epoch = epoch
        self.counter = counter  # the last counter accepted
        self.auth_failures = 0
        self.paused = False  # tag checks paused after a flood of bad tags (the caller times it)
        self.detail = 0
        # the request being admitted
        self.type = 0
        self.seq = 0
        self.broadcast = False
        self.answered = True  # False for broadcasts, but for the ones named below
        self.payload_end = 0  # payload is body[7:payload_end]
        self.auth_epoch = 0
        self.auth_counter = 0
        self.verified = False  # the request's tag passed: its answer is signed
        self.consumed = False  # the request consumed its counter: its answer is remembered
        self._tag = bytearray(_TAG_LEN)
        self._cache_epoch = [0] * _CACHE
        self._cache_seq = [-1] * _CACHE
        self._cache_tag = [bytearray(_TAG_LEN) for _ in range(_CACHE)]
        self._cache_body = [bytearray(catalog.MAX_BODY) for _ in range(_CACHE)]
        self._cache_len = [0] * _CACHE
        self._cache_next = 0
        self._hit = 0

    def admit(self, body, n):
        self.detail = 0
        self.verified = False
        self.consumed = False
        if n < _HEADER_LEN:
            return IGNORE
        dst = body[1]
        flags = body[4]
        self.type = body[3]
        self.seq = body[5] | (body[6] << 8)
        self.broadcast = dst == catalog.ADDR_BROADCAST
        self.answered = not self.broadcast
        self.payload_end = n
        if flags & catalog.FLAG_RESPONSE:
            return IGNORE  # another tap's answer on the shared bus
        if dst != self.address and not self.broadcast:
            return IGNORE
        if body[0] != catalog.VERSION:
            return self._refuse(catalog.E_BAD_VERSION, catalog.VERSION)
        if flags & ~catalog.FLAGS_KNOWN & 0xFF:
            return self._refuse(catalog.E_BAD_HEADER, flags)
        message = self.messages.get(self.type)
        if message is None or message.request is None:
            return self._refuse(catalog.E_UNKNOWN_TYPE, self.type)
        if self.type == catalog.T_ASSIGN_ADDRESS:
            if not self._names_me(body, n):
                return IGNORE
            self.answered = True  # one unique id, so one answer even to a broadcast
        if self.broadcast and not message.addressing & catalog.BROADCAST:
            return IGNORE  # never answered, never executed
        if not self.broadcast and not message.addressing & catalog.UNICAST:
            return self._refuse(catalog.E_BAD_ADDRESSING, dst)
        if not message.authenticated:
            if flags & catalog.FLAG_AUTH:
                return self._refuse(catalog.E_BAD_HEADER, flags)
            return ADMIT
        return self._admit_signed(body, n, flags, message.request.size)

    def _admit_signed(self, body, n, flags, payload_len):
        if not flags & catalog.FLAG_AUTH:
            return self._refuse(catalog.E_AUTH_REQUIRED, 0)
        if n < _HEADER_LEN + _AUTH_LEN:
            return self._refuse(catalog.E_BAD_LENGTH, payload_len)  # as every BAD_LENGTH: the expected length
        trailer = n - _AUTH_LEN
        epoch = _u32(body, trailer)
        counter = _u32(body, trailer + 4)
        tag = self._tag
        for i in range(_TAG_LEN):
            tag[i] = body[n - _TAG_LEN + i]
        self.payload_end = trailer
        self.auth_epoch = epoch
        self.auth_counter = counter
        if self._find_cached(epoch, tag):
            return CACHED
        if self.paused:
            return self._refuse(catalog.E_BUSY, 0)
        if not self.hmac.tag_ok(memoryview(body)[: n - _TAG_LEN], tag, _TAG_LEN):
            self.auth_failures += 1
            return self._refuse(catalog.E_BAD_TAG, 0)
        self.verified = True
        if self.type == catalog.T_RAISE_EPOCH:
            if epoch <= self.epoch:
                return self._refuse(catalog.E_STALE_EPOCH, self.epoch)
        elif epoch < self.epoch:
            return self._refuse(catalog.E_STALE_EPOCH, self.epoch)
        elif epoch > self.epoch:
            return self._refuse(catalog.E_EPOCH_NOT_RAISED, self.epoch)
        if counter <= self.counter:
            return self._refuse(catalog.E_REPLAY, self.counter)
        self.counter = counter  # consumed, whatever the handler then decides
        self.consumed = True
        if self.type == catalog.T_RAISE_EPOCH:
            # checked after the raise and the counter (SPEC.md, "Controller epoch")
            if trailer - _HEADER_LEN != payload_len:
                return self._refuse(catalog.E_BAD_LENGTH, payload_len)
            if _u32(body, _HEADER_LEN) != epoch:
                return self._refuse(catalog.E_OUT_OF_RANGE, 1)  # new_epoch, the first field
            self.epoch = epoch
        return ADMIT

    def heartbeat(self, epoch):
        """ADMIT if a heartbeat's epoch is the tap's; it never changes the epoch."""
        if epoch < self.epoch:
            return self._refuse(catalog.E_STALE_EPOCH, self.epoch)
        if epoch > self.epoch:
            return self._refuse(catalog.E_EPOCH_NOT_RAISED, self.epoch)
        return ADMIT

    def remember(self, answer, n):
        """Keep the answer to the request that consumed its counter, for its retries."""
        slot = self._cache_next
        self._cache_next = (slot + 1) % _CACHE
        self._cache_epoch[slot] = self.auth_epoch
        self._cache_seq[slot] = self.seq
        self._cache_tag[slot][:] = self._tag
        self._cache_body[slot][:n] = answer[:n]
        self._cache_len[slot] = n

    def cached_answer(self):
        """(buffer, length) of the answer found by the last CACHED verdict."""
        return self._cache_body[self._hit], self._cache_len[self._hit]

    def _find_cached(self, epoch, tag):
        for slot in range(_CACHE):
            if self._cache_seq[slot] == self.seq and self._cache_epoch[slot] == epoch and self._cache_tag[slot] == tag:
                self._hit = slot
                return True
        return False

    def _names_me(self, body, n):
        if n < _HEADER_LEN + 8:
            return False
        for i in range(8):
            if body[_HEADER_LEN + i] != self.unique_id[i]:
                return False
        return True

    def _refuse(self, error, detail):
        self.detail = detail
        if not self.answered:
            return IGNORE  # a broadcast is not answered, not even with a refusal
        return error
