//! The Algo Order API (conditional orders resting on the venue) as the
//! client calls it: place, cancel, list open, look up by client id.

use reqwest::Method;

use super::super::weights::{self, ALGO_ORDER, OPEN_ALGO_ORDERS};
use super::super::wire::{RawAlgoOrder, decode};
use super::{Binance, p};
use crate::budget::Caller;
use crate::domain::{AlgoOrder, AlgoOrderRequest, AlgoSize};
use crate::exchange::VenueError;
use crate::exchange::binance::transport::Request;

impl Binance {
    pub(super) async fn place_algo(
        &self,
        caller: &Caller,
        account: &str,
        request: &AlgoOrderRequest,
    ) -> Result<AlgoOrder, VenueError> {
        let acct = self.account(account)?;
        let mut params = vec![
            p("algoType", "CONDITIONAL"),
            p("symbol", &request.symbol),
            p("side", request.side.as_str()),
            p("type", request.kind.as_str()),
            p("triggerPrice", request.trigger_price.normalize()),
            p("workingType", request.working_type.as_str()),
            p("priceProtect", request.price_protect),
            p("clientAlgoId", &request.client_algo_id),
        ];
        match request.size {
            AlgoSize::ClosePosition => params.push(p("closePosition", "true")),
            AlgoSize::ReduceOnly(qty) => {
                params.push(p("quantity", qty.normalize()));
                params.push(p("reduceOnly", "true"));
            }
        }
        let req = Request {
            method: Method::POST,
            endpoint: ALGO_ORDER,
            params,
            account: Some(acct.clone()),
            key_only: false,
            weight: weights::weight(&Method::POST, ALGO_ORDER, true).unwrap_or(0),
        };
        let body = self.request(caller, req).await?;
        decode::<RawAlgoOrder>(ALGO_ORDER, &body)?.into_algo_order()
    }

    pub(super) async fn cancel_algo(
        &self,
        caller: &Caller,
        account: &str,
        symbol: &str,
        client_algo_id: &str,
    ) -> Result<(), VenueError> {
        let acct = self.account(account)?;
        let req = Request {
            method: Method::DELETE,
            endpoint: ALGO_ORDER,
            params: vec![p("symbol", symbol), p("clientAlgoId", client_algo_id)],
            account: Some(acct.clone()),
            key_only: false,
            weight: weights::weight(&Method::DELETE, ALGO_ORDER, true).unwrap_or(1),
        };
        self.request(caller, req).await.map(drop)
    }

    pub(super) async fn open_algos(
        &self,
        caller: &Caller,
        account: &str,
        symbol: Option<&str>,
    ) -> Result<Vec<AlgoOrder>, VenueError> {
        let acct = self.account(account)?;
        let params = symbol.map(|s| vec![p("symbol", s)]).unwrap_or_default();
        let raw: Vec<RawAlgoOrder> = self.get(caller, OPEN_ALGO_ORDERS, params, Some(acct)).await?;
        raw.into_iter().map(RawAlgoOrder::into_algo_order).collect()
    }

    pub(super) async fn algo_by_client_id(
        &self,
        caller: &Caller,
        account: &str,
        symbol: &str,
        client_algo_id: &str,
    ) -> Result<Option<AlgoOrder>, VenueError> {
        let acct = self.account(account)?;
        let params = vec![p("symbol", symbol), p("clientAlgoId", client_algo_id)];
        match self.get::<RawAlgoOrder>(caller, ALGO_ORDER, params, Some(acct)).await {
            Ok(raw) => raw.into_algo_order().map(Some),
            Err(VenueError::Rejected { code: -2013, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
