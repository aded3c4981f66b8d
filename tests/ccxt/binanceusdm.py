"""Drives the simulated exchange with ccxt's `binanceusdm`, as a third-party
Binance client would drive the venue: markets as linear perpetuals, tickers,
positions (with a symbol filter), trades, a reduce-only market close, lookup
by client order id, and the venue's error codes surfacing as ccxt's error
classes. Usage: binanceusdm.py BASE_URL (run by tests/ccxt.rs)."""

import sys

import ccxt

BASE = sys.argv[1]
SYMBOL = "BTC/USDT:USDT"


def client(secret="sim-main-secret"):
    e = ccxt.binanceusdm(
        {
            "apiKey": "sim-main-key",
            "secret": secret,
            "options": {"fetchCurrencies": False, "adjustForTimeDifference": False},
        }
    )
    for name, url in list(e.urls["api"].items()):
        if isinstance(url, str) and url.startswith("https://fapi.binance.com"):
            e.urls["api"][name] = url.replace("https://fapi.binance.com", BASE)
    # ccxt picks its USD-M error table by the host name (fapi.binance.com);
    # the simulator's URL stands for that host.
    by_url = e.get_exceptions_by_url
    e.get_exceptions_by_url = lambda url, kind: (
        e.exceptions["linear"].get(kind, {}) if url and url.startswith(BASE) else by_url(url, kind)
    )
    return e


def expect_error(cls, call, what):
    try:
        call()
    except cls as e:
        print(f"ok: {what} -> {type(e).__name__}")
        return
    except Exception as e:  # noqa: BLE001 - any other class is the failure being tested
        raise AssertionError(f"{what}: expected {cls.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"{what}: expected {cls.__name__}, got no error")


e = client()
markets = e.load_markets()
m = markets.get(SYMBOL)
assert m is not None, f"{SYMBOL} not among {sorted(markets)[:5]}..."
assert m["type"] == "swap" and m["swap"] and m["linear"] and m["contract"], m
assert (m["base"], m["quote"], m["settle"]) == ("BTC", "USDT", "USDT"), m
assert float(m["precision"]["amount"]) == 0.001, m["precision"]
assert float(m["limits"]["amount"]["min"]) == 0.001, m["limits"]
print(f"ok: {len(markets)} markets, {SYMBOL} is a linear perpetual")

tickers = e.fetch_tickers()
assert tickers[SYMBOL]["last"] and tickers[SYMBOL]["last"] > 0, tickers[SYMBOL]
print("ok: tickers")

rows = e.fapiPrivateV2GetPositionRisk({"symbol": "BTCUSDT"})
assert [r["symbol"] for r in rows] == ["BTCUSDT"], rows
open_positions = [p for p in e.fetch_positions() if p["contracts"]]
assert open_positions, "the demo account opens with positions"
position = open_positions[0]
symbol = position["symbol"]
only = e.fetch_positions([symbol])
assert only and all(p["symbol"] == symbol for p in only), only
print(f"ok: positions ({len(open_positions)} open), filtered to {symbol}")

trades = e.fetch_my_trades(symbol)
assert trades and all(t["symbol"] == symbol for t in trades), trades
print(f"ok: {len(trades)} trades in {symbol}")

side = "sell" if position["side"] == "long" else "buy"
amount = position["contracts"]
order = e.create_order(symbol, "market", side, amount, params={"reduceOnly": True, "newClientOrderId": "ccxt-close-1"})
assert order["clientOrderId"] == "ccxt-close-1", order
found = e.fetch_order(None, symbol, {"origClientOrderId": "ccxt-close-1"})
assert found["status"] == "closed" and float(found["filled"]) == float(amount), found
assert not [p for p in e.fetch_positions([symbol]) if p["contracts"]], "the close took the position flat"
print(f"ok: reduce-only market close of {amount} {symbol}, found by client id")

expect_error(
    ccxt.InvalidOrder,
    lambda: e.create_order(symbol, "market", side, amount, params={"reduceOnly": True, "newClientOrderId": "ccxt-close-1"}),
    "-4116 a reused client order id",
)
expect_error(
    ccxt.InvalidOrder,
    lambda: e.create_order(symbol, "market", side, amount, params={"reduceOnly": True, "newClientOrderId": "ccxt-close-2"}),
    "-2022 reduce-only on a flat position",
)
expect_error(ccxt.BadSymbol, lambda: e.fapiPublicGetTickerPrice({"symbol": "NOPEUSDT"}), "-1121 an unknown symbol")
expect_error(
    ccxt.AuthenticationError, lambda: client(secret="not-the-secret").fetch_positions(), "-1022 a bad signature"
)
print("all ccxt checks passed")
