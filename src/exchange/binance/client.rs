//! Binance USDⓈ-M Futures as a [`Venue`]: which route answers each question,
//! with which parameters and weight, through the shared coordination
//! ([`Upstream`]) and the [`Transport`]. Every failure is counted once,
//! here, by kind.

mod algo;

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use super::sign::encode;
use super::transport::{Request, Transport, TransportOptions};
use super::weights::{
    self, ENDPOINTS, EXCHANGE_INFO, LISTEN_KEY, ORDER, POSITION_RISK, POSITION_SIDE_DUAL, TICKER_PRICE, TIME,
    USER_TRADES,
};
use super::wire::{RawFill, RawInfo, RawOrder, RawPosition, RawPrice, decode};
use crate::accounts::Accounts;
use crate::budget::{Admission, Caller};
use crate::clock::now_ms;
use crate::domain::{AlgoOrder, AlgoOrderRequest, Fill, OrderAck, OrderSide, Position, Price};
use crate::exchange::{Account, ExchangeInfo, Venue, VenueError, VenueErrorKind};
use crate::telemetry::Metrics;
use crate::upstream::{Call, Knobs, Upstream};

pub struct Binance {
    upstream: Arc<Upstream<VenueError>>,
    transport: Arc<Transport>,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
}

impl Binance {
    pub fn new(
        options: TransportOptions,
        knobs: Knobs,
        admission: Arc<Admission>,
        metrics: Arc<Metrics>,
        accounts: Arc<Accounts>,
    ) -> anyhow::Result<Self> {
        let errors: Vec<&'static str> = VenueErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        metrics.api.init(ENDPOINTS, &errors);
        Ok(Binance {
            transport: Arc::new(Transport::new(options, admission.clone(), metrics.clone())?),
            upstream: Upstream::new(knobs, admission, metrics.clone()),
            accounts,
            metrics,
        })
    }

    /// The live registry of accounts this client signs for.
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    pub fn admission(&self) -> &Arc<Admission> {
        self.upstream.admission()
    }

    pub fn base_url(&self) -> &str {
        self.transport.base_url()
    }

    /// Venue clock minus ours, as last measured.
    pub fn clock_offset_ms(&self) -> i64 {
        self.transport.clock_offset_ms()
    }

    /// Counts a failure in `script_manager_api_errors_total`: once, whatever layer it came from.
    async fn tally<T>(&self, work: impl Future<Output = Result<T, VenueError>>) -> Result<T, VenueError> {
        let result = work.await;
        if let Err(e) = &result {
            self.metrics.api.error(e.kind().as_str());
        }
        result
    }

    fn account(&self, name: &str) -> Result<Arc<Account>, VenueError> {
        self.accounts
            .get(name)
            .ok_or_else(|| VenueError::Auth(format!("no credentials for account `{name}`")))
    }

    /// One request through the coordination; a signed request the venue
    /// refuses for its timestamp (-1021) re-syncs the clock and goes once more.
    async fn request(&self, caller: &Caller, req: Request) -> Result<bytes::Bytes, VenueError> {
        let signed = req.account.is_some();
        match self.send(caller, &req).await {
            Err(VenueError::ClockSkew) if signed => {
                tracing::warn!(
                    endpoint = req.endpoint,
                    "venue rejected our timestamp; re-syncing the clock"
                );
                self.measure_clock(caller).await?;
                self.send(caller, &req).await
            }
            other => other,
        }
    }

    async fn send(&self, caller: &Caller, req: &Request) -> Result<bytes::Bytes, VenueError> {
        let key = (req.method == Method::GET).then(|| request_key(req));
        let transport = self.transport.clone();
        let owned = Request {
            method: req.method.clone(),
            endpoint: req.endpoint,
            params: req.params.clone(),
            account: req.account.clone(),
            key_only: req.key_only,
            weight: req.weight,
        };
        let call = Call {
            endpoint: req.endpoint,
            key,
            weight: req.weight,
        };
        self.upstream
            .call(
                caller,
                call,
                Box::new(move |caller| Box::pin(async move { transport.send(&caller, &owned).await })),
            )
            .await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        endpoint: &'static str,
        params: Vec<(String, String)>,
        account: Option<Arc<Account>>,
    ) -> Result<T, VenueError> {
        let with_symbol = params.iter().any(|(k, _)| k == "symbol");
        let weight = weights::weight(&Method::GET, endpoint, with_symbol).unwrap_or(1);
        let req = Request {
            method: Method::GET,
            endpoint,
            params,
            account,
            key_only: false,
            weight,
        };
        let body = self.request(caller, req).await?;
        decode(endpoint, &body)
    }

    /// Measures the venue's clock offset with `GET /fapi/v1/time` (weight 1), always fresh.
    async fn measure_clock(&self, caller: &Caller) -> Result<i64, VenueError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Time {
            server_time: i64,
        }
        let before = now_ms();
        let req = Request {
            method: Method::GET,
            endpoint: TIME,
            params: vec![],
            account: None,
            key_only: false,
            weight: 1,
        };
        let call = Call {
            endpoint: TIME,
            key: None,
            weight: 1,
        };
        let transport = self.transport.clone();
        let body = self
            .upstream
            .call(
                caller,
                call,
                Box::new(move |caller| Box::pin(async move { transport.send(&caller, &req).await })),
            )
            .await?;
        let after = now_ms();
        let t: Time = decode(TIME, &body)?;
        let offset = t.server_time - (before + after) / 2;
        self.transport.set_clock_offset_ms(offset);
        tracing::info!(offset_ms = offset, "venue clock offset measured");
        Ok(offset)
    }

    /// Measures the venue's clock offset (signed requests and budget minutes follow it).
    pub async fn sync_time(&self, caller: &Caller) -> Result<i64, VenueError> {
        self.tally(self.measure_clock(caller)).await
    }
}

/// Identical requests share a key: method, route, parameters, account.
fn request_key(req: &Request) -> String {
    let mut params = req.params.clone();
    params.sort();
    let account = req.account.as_ref().map_or("", |a| a.name.as_str());
    format!("{} {}?{}#{account}", req.method, req.endpoint, encode(&params))
}

fn p(k: &str, v: impl ToString) -> (String, String) {
    (k.to_string(), v.to_string())
}

impl Binance {
    /// One listen-key call (`POST` creates or returns, `PUT` extends): the API key alone, weight 1.
    async fn listen_key_call(
        &self,
        caller: &Caller,
        account: &str,
        method: Method,
        key: Option<&str>,
    ) -> Result<String, VenueError> {
        let acct = self.account(account)?;
        let req = Request {
            method: method.clone(),
            endpoint: LISTEN_KEY,
            params: key.map(|k| vec![p("listenKey", k)]).unwrap_or_default(),
            account: Some(acct.clone()),
            key_only: true,
            weight: weights::weight(&method, LISTEN_KEY, false).unwrap_or(1),
        };
        let body = self.request(caller, req).await?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Key {
            #[serde(default)]
            listen_key: Option<String>,
        }
        let answer: Key = decode(LISTEN_KEY, &body)?;
        Ok(answer.listen_key.or(key.map(String::from)).unwrap_or_default())
    }
}

impl Venue for Binance {
    fn listen_key<'a>(&'a self, caller: &'a Caller, account: &'a str) -> BoxFuture<'a, Result<String, VenueError>> {
        Box::pin(self.tally(async move {
            let key = self.listen_key_call(caller, account, Method::POST, None).await?;
            match key.is_empty() {
                true => Err(VenueError::Decode("listenKey: no key in the answer".into())),
                false => Ok(key),
            }
        }))
    }

    fn keep_alive<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), VenueError>> {
        Box::pin(self.tally(async move {
            self.listen_key_call(caller, account, Method::PUT, Some(key))
                .await
                .map(|_| ())
        }))
    }

    fn exchange_info<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<ExchangeInfo, VenueError>> {
        Box::pin(self.tally(async move {
            let raw: RawInfo = self.get(caller, EXCHANGE_INFO, vec![], None).await?;
            let weight = raw
                .rate_limits
                .iter()
                .find(|l| l.rate_limit_type == "REQUEST_WEIGHT" && l.interval == "MINUTE" && l.interval_num == 1)
                .ok_or_else(|| VenueError::Decode("exchangeInfo has no REQUEST_WEIGHT per minute limit".into()))?;
            Ok(ExchangeInfo {
                weight_limit_per_minute: weight.limit,
                symbols: raw.symbols.into_iter().map(|s| s.into_listing()).collect(),
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
                let all: Vec<RawPrice> = self.get(caller, TICKER_PRICE, vec![], None).await?;
                all.into_iter()
                    .filter(|r| symbols.is_empty() || symbols.contains(&r.symbol))
                    .collect()
            } else {
                let mut out = Vec::with_capacity(symbols.len());
                for symbol in symbols {
                    out.push(
                        self.get::<RawPrice>(caller, TICKER_PRICE, vec![p("symbol", symbol)], None)
                            .await?,
                    );
                }
                out
            };
            raw.into_iter().map(RawPrice::into_price).collect()
        }))
    }

    fn position_update_times<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, i64)>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let raw: Vec<RawPosition> = self.get(caller, POSITION_RISK, vec![], Some(acct)).await?;
            Ok(raw.into_iter().map(|r| (r.symbol, r.update_time)).collect())
        }))
    }

    fn position<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
    ) -> BoxFuture<'a, Result<Option<Position>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let params = vec![p("symbol", symbol)];
            let raw: Vec<RawPosition> = self.get(caller, POSITION_RISK, params, Some(acct)).await?;
            let mut open = None;
            for r in raw.into_iter().filter(|r| r.symbol == symbol) {
                open = r.into_open_position()?;
            }
            Ok(open)
        }))
    }

    fn position_rows<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Position>, VenueError>> {
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let raw: Vec<RawPosition> = self.get(caller, POSITION_RISK, vec![], Some(acct)).await?;
            raw.into_iter().map(RawPosition::into_position).collect()
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
            let raw: Vec<RawFill> = self.get(caller, USER_TRADES, params, Some(acct)).await?;
            raw.into_iter().map(RawFill::into_fill).collect()
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
            let req = Request {
                method: Method::POST,
                endpoint: ORDER,
                params,
                account: Some(acct.clone()),
                key_only: false,
                weight: weights::weight(&Method::POST, ORDER, true).unwrap_or(0),
            };
            let body = self.request(caller, req).await?;
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
            match self.get::<RawOrder>(caller, ORDER, params, Some(acct)).await {
                Ok(raw) => raw.into_ack().map(Some),
                Err(VenueError::Rejected { code: -2013, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        }))
    }

    fn hedge_mode<'a>(&'a self, caller: &'a Caller, account: &'a str) -> BoxFuture<'a, Result<bool, VenueError>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Mode {
            dual_side_position: bool,
        }
        Box::pin(self.tally(async move {
            let acct = self.account(account)?;
            let mode: Mode = self.get(caller, POSITION_SIDE_DUAL, vec![], Some(acct)).await?;
            Ok(mode.dual_side_position)
        }))
    }

    fn place_algo_order<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        request: &'a AlgoOrderRequest,
    ) -> BoxFuture<'a, Result<AlgoOrder, VenueError>> {
        Box::pin(self.tally(self.place_algo(caller, account, request)))
    }

    fn cancel_algo_order<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_algo_id: &'a str,
    ) -> BoxFuture<'a, Result<(), VenueError>> {
        Box::pin(self.tally(self.cancel_algo(caller, account, symbol, client_algo_id)))
    }

    fn open_algo_orders<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<AlgoOrder>, VenueError>> {
        Box::pin(self.tally(self.open_algos(caller, account, symbol)))
    }

    fn algo_order_by_client_id<'a>(
        &'a self,
        caller: &'a Caller,
        account: &'a str,
        symbol: &'a str,
        client_algo_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<AlgoOrder>, VenueError>> {
        Box::pin(self.tally(self.algo_by_client_id(caller, account, symbol, client_algo_id)))
    }
}
