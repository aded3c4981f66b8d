//! Binance USDⓈ-M Futures over the shared upstream client. Request weights
//! come from `../shared/reference/binance-usdm.md`; shapes are Binance's
//! (decimals as strings, times in ms).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{
    Account, Caller, ExchangeInfo, Fill, OrderAck, OrderSide, OrderStatus, Position, Price, Venue, VenueError,
};
use crate::upstream::{Request, Upstream};

pub const TIME: &str = "/fapi/v1/time";
pub const EXCHANGE_INFO: &str = "/fapi/v1/exchangeInfo";
pub const TICKER_PRICE: &str = "/fapi/v1/ticker/price";
pub const POSITION_RISK: &str = "/fapi/v2/positionRisk";
pub const USER_TRADES: &str = "/fapi/v1/userTrades";
pub const ORDER: &str = "/fapi/v1/order";

/// Every route we call, for the endpoint label.
pub const ENDPOINTS: &[&str] = &[TIME, EXCHANGE_INFO, TICKER_PRICE, POSITION_RISK, USER_TRADES, ORDER];

pub struct Binance {
    upstream: Arc<Upstream>,
    accounts: HashMap<String, Account>,
}

impl Binance {
    pub fn new(upstream: Arc<Upstream>, accounts: impl IntoIterator<Item = Account>) -> Self {
        Binance {
            upstream,
            accounts: accounts.into_iter().map(|a| (a.name.clone(), a)).collect(),
        }
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    pub fn account_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.accounts.keys().cloned().collect();
        names.sort();
        names
    }

    /// Counts failures found while decoding (the upstream client counts the rest).
    async fn tally<T>(&self, work: impl Future<Output = Result<T, VenueError>>) -> Result<T, VenueError> {
        let result = work.await;
        if let Err(e @ VenueError::Decode(_)) = &result {
            self.upstream.count_error(e);
        }
        result
    }

    fn account(&self, name: &str) -> Result<&Account, VenueError> {
        self.accounts
            .get(name)
            .ok_or_else(|| VenueError::Auth(format!("no credentials for account `{name}`")))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        endpoint: &'static str,
        params: Vec<(String, String)>,
        account: Option<&Account>,
        weight: u32,
    ) -> Result<T, VenueError> {
        let body = self
            .upstream
            .call(
                caller,
                Request {
                    method: Method::GET,
                    endpoint,
                    params,
                    account,
                    weight,
                },
            )
            .await?;
        decode(endpoint, &body)
    }
}

fn decode<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T, VenueError> {
    serde_json::from_slice(body).map_err(|e| VenueError::Decode(format!("{endpoint}: {e}")))
}

fn dec(field: &str, s: &str) -> Result<Decimal, VenueError> {
    Decimal::from_str(s).map_err(|_| VenueError::Decode(format!("{field}: `{s}` is not a decimal")))
}

fn p(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInfo {
    rate_limits: Vec<RawLimit>,
    symbols: Vec<RawSymbol>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLimit {
    rate_limit_type: String,
    interval: String,
    interval_num: u32,
    limit: u32,
}
#[derive(Deserialize)]
struct RawSymbol {
    symbol: String,
}
#[derive(Deserialize)]
struct RawPrice {
    symbol: String,
    price: String,
    #[serde(default)]
    time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPosition {
    symbol: String,
    position_amt: String,
    entry_price: String,
    mark_price: String,
    un_realized_profit: String,
    #[serde(default)]
    update_time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFill {
    symbol: String,
    id: u64,
    order_id: u64,
    side: String,
    price: String,
    qty: String,
    realized_pnl: String,
    commission: String,
    time: i64,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOrder {
    order_id: u64,
    symbol: String,
    status: String,
    client_order_id: String,
    #[serde(default)]
    executed_qty: Option<String>,
    #[serde(default)]
    avg_price: Option<String>,
}

impl RawOrder {
    fn into_ack(self) -> Result<OrderAck, VenueError> {
        Ok(OrderAck {
            order_id: self.order_id,
            symbol: self.symbol,
            status: OrderStatus::parse(&self.status),
            client_order_id: self.client_order_id,
            executed_qty: dec("executedQty", self.executed_qty.as_deref().unwrap_or("0"))?,
            avg_price: dec("avgPrice", self.avg_price.as_deref().unwrap_or("0"))?,
        })
    }
}

impl Venue for Binance {
    fn exchange_info<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<ExchangeInfo, VenueError>> {
        Box::pin(self.tally(async move {
            let raw: RawInfo = self.get(caller, EXCHANGE_INFO, vec![], None, 1).await?;
            let weight = raw
                .rate_limits
                .iter()
                .find(|l| l.rate_limit_type == "REQUEST_WEIGHT" && l.interval == "MINUTE" && l.interval_num == 1)
                .ok_or_else(|| VenueError::Decode("exchangeInfo has no REQUEST_WEIGHT per minute limit".into()))?;
            Ok(ExchangeInfo {
                weight_limit_per_minute: weight.limit,
                symbols: raw.symbols.into_iter().map(|s| s.symbol).collect(),
            })
        }))
    }

    fn prices<'a>(
        &'a self,
        caller: &'a Caller,
        symbols: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Price>, VenueError>> {
        Box::pin(self.tally(async move {
            let raw: Vec<RawPrice> = if self.upstream.knobs.batching || symbols.is_empty() {
                // One call (weight 2) for every symbol.
                let all: Vec<RawPrice> = self.get(caller, TICKER_PRICE, vec![], None, 2).await?;
                all.into_iter()
                    .filter(|r| symbols.is_empty() || symbols.contains(&r.symbol))
                    .collect()
            } else {
                let mut out = Vec::with_capacity(symbols.len());
                for symbol in symbols {
                    out.push(
                        self.get::<RawPrice>(caller, TICKER_PRICE, vec![p("symbol", symbol)], None, 1)
                            .await?,
                    );
                }
                out
            };
            raw.into_iter()
                .map(|r| {
                    Ok(Price {
                        price: dec("price", &r.price)?,
                        symbol: r.symbol,
                        time_ms: r.time,
                    })
                })
                .collect()
        }))
    }

    fn position_update_times<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let raw: Vec<RawPosition> = self.get(caller, POSITION_RISK, vec![], Some(acct), 5).await?;
            Ok(raw.into_iter().map(|r| (r.symbol, r.update_time)).collect())
        }))
    }

    fn positions<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Position>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let raw: Vec<RawPosition> = self.get(caller, POSITION_RISK, vec![], Some(acct), 5).await?;
            let mut out = Vec::new();
            for r in raw {
                let amount = dec("positionAmt", &r.position_amt)?;
                if amount.is_zero() {
                    continue;
                }
                out.push(Position {
                    amount,
                    entry_price: dec("entryPrice", &r.entry_price)?,
                    mark_price: dec("markPrice", &r.mark_price)?,
                    unrealized_pnl: dec("unRealizedProfit", &r.un_realized_profit)?,
                    update_time_ms: r.update_time,
                    symbol: r.symbol,
                });
            }
            Ok(out)
        }))
    }

    fn fills_since<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        from_id: Option<u64>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Fill>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let mut params = vec![p("symbol", symbol)];
            if let Some(id) = from_id {
                params.push(p("fromId", id));
            }
            params.push(p("limit", limit.clamp(1, 1000)));
            let raw: Vec<RawFill> = self.get(caller, USER_TRADES, params, Some(acct), 5).await?;
            raw.into_iter()
                .map(|r| {
                    Ok(Fill {
                        side: OrderSide::parse(&r.side)
                            .ok_or_else(|| VenueError::Decode(format!("side `{}`", r.side)))?,
                        price: dec("price", &r.price)?,
                        qty: dec("qty", &r.qty)?,
                        realized_pnl: dec("realizedPnl", &r.realized_pnl)?,
                        commission: dec("commission", &r.commission)?,
                        symbol: r.symbol,
                        id: r.id,
                        order_id: r.order_id,
                        time_ms: r.time,
                    })
                })
                .collect()
        }))
    }

    fn close_position<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        side: OrderSide,
        qty: Decimal,
        client_order_id: &'a str,
    ) -> BoxFuture<'a, Result<OrderAck, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let params = vec![
                p("symbol", symbol),
                p("side", side.as_str()),
                p("type", "MARKET"),
                p("quantity", qty.normalize()),
                p("reduceOnly", "true"),
                p("newClientOrderId", client_order_id),
                p("newOrderRespType", "RESULT"),
            ];
            // Orders cost no IP weight; they still count as the process's calls.
            let req = Request {
                method: Method::POST,
                endpoint: ORDER,
                params,
                account: Some(acct),
                weight: 0,
            };
            let body = self.upstream.call(caller, req).await?;
            decode::<RawOrder>(ORDER, &body)?.into_ack()
        }))
    }

    fn order_by_client_id<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_order_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<OrderAck>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let params = vec![p("symbol", symbol), p("origClientOrderId", client_order_id)];
            match self.get::<RawOrder>(caller, ORDER, params, Some(acct), 1).await {
                Ok(raw) => raw.into_ack().map(Some),
                Err(VenueError::Rejected { code: -2013, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }))
    }
}
