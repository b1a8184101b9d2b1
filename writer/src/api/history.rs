//! The `History` gRPC service: operators' queries over what the writer stored.
//!
//! Site availability comes from raw rows for ranges up to [`RAW_RANGE_LIMIT`] (exact
//! percentiles), from minute rollups up to [`MINUTE_ROLLUP_LIMIT`] and from hour
//! rollups beyond, whose percentiles come from their response-time histograms
//! ([`crate::store::latency`]: within 4.4 % of a time in the exact one's bucket).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Request, Response, Status};
use tracing::instrument;

use fleetmon::pb::history_server::History;
use fleetmon::pb::{
    AvailabilityReport, AvailabilityReportRequest, HostSeries, HostSeriesPoint, HostSeriesRequest,
    ListStoredAgentsRequest, ListStoredAgentsResponse, RecentChecksRequest, RecentChecksResponse,
    SiteAvailability, SiteAvailabilityRequest, SiteAvailabilityResponse, SiteCheck, StoredAgent,
};

use crate::api::error::ServiceError;
use crate::store::{PostgresSink, Tier, host_series_sql};

/// The host series queries: of one agent, then of the whole fleet; each from raw
/// rows, then from each rollup tier in [`Tier::ALL`]'s order.
static SERIES: std::sync::LazyLock<[[String; 4]; 2]> = std::sync::LazyLock::new(|| {
    [false, true].map(|fleet| {
        [None, Some(Tier::Minute), Some(Tier::Hour), Some(Tier::Day)]
            .map(|tier| host_series_sql(tier, fleet))
    })
});
const AVAILABILITY_RAW: &str = include_str!("../../sql/site_availability_raw.sql");
const AVAILABILITY_ROLLUP: &str = include_str!("../../sql/site_availability_rollup.sql");
const RECENT_CHECKS: &str = include_str!("../../sql/recent_checks.sql");
const STORED_AGENTS: &str = include_str!("../../sql/stored_agents.sql");

/// Longest range answered from raw rows.
pub const RAW_RANGE_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Longest range answered from minute rollups.
pub const MINUTE_ROLLUP_LIMIT: Duration = Duration::from_secs(14 * 24 * 3600);
/// Most points a host series may have.
pub const MAX_POINTS: u64 = 10_000;
/// Most checks `ListRecentChecks` returns.
pub const MAX_RECENT: u32 = 1000;

/// The service over the writer's pool.
#[derive(Debug, Clone)]
pub struct HistoryService {
    sink: Arc<PostgresSink>,
}

fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

impl HistoryService {
    /// A service reading through `sink`'s pool.
    pub fn new(sink: Arc<PostgresSink>) -> Self {
        HistoryService { sink }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ServiceError> {
        Ok(self.sink.queries().get().await?)
    }

    async fn host_series(&self, request: HostSeriesRequest) -> Result<HostSeries, ServiceError> {
        let (start, end) = super::range(request.range)?;
        let step = request.step_seconds.max(1);
        let span = end.duration_since(start).unwrap_or_default().as_secs();
        if span / u64::from(step) > MAX_POINTS {
            return Err(ServiceError::invalid(format!(
                "range / step_seconds gives more than {MAX_POINTS} points: use a larger step"
            )));
        }
        let tier = Tier::for_step(u64::from(step));
        let fleet = request.agent_id.is_empty();
        let sql = &SERIES[usize::from(fleet)][tier.map_or(0, |tier| tier as usize + 1)];
        let step_seconds = f64::from(step);
        let client = self.client().await?;
        let rows = if fleet {
            client.query(sql, &[&start, &end, &step_seconds]).await?
        } else {
            client
                .query(sql, &[&start, &end, &step_seconds, &request.agent_id])
                .await?
        };
        let points = rows
            .iter()
            .map(|row| HostSeriesPoint {
                bucket_start: Some(to_timestamp(row.get("bucket"))),
                samples: u32::try_from(row.get::<_, i64>("samples")).unwrap_or(u32::MAX),
                cpu_usage_percent: row.get("cpu_usage_percent"),
                load_average_1m: row.get("load_average_1m"),
                memory_used_bytes: row.get("memory_used_bytes"),
                memory_available_bytes: row.get("memory_available_bytes"),
                swap_used_bytes: row.get("swap_used_bytes"),
                disk_used_bytes: row.get("disk_used_bytes"),
                network_rx_bytes_per_second: row.get("network_rx_bytes_per_second"),
                network_tx_bytes_per_second: row.get("network_tx_bytes_per_second"),
            })
            .collect();
        Ok(HostSeries {
            agent_id: request.agent_id,
            step_seconds: step,
            points,
            resolution: tier.map_or("raw", Tier::name).to_owned(),
        })
    }

    async fn site_availability(
        &self,
        request: SiteAvailabilityRequest,
    ) -> Result<SiteAvailabilityResponse, ServiceError> {
        let (start, end) = super::range(request.range)?;
        let span = end.duration_since(start).unwrap_or_default();
        let client = self.client().await?;
        let sites = if span <= RAW_RANGE_LIMIT {
            let rows = client
                .query(
                    AVAILABILITY_RAW,
                    &[
                        &request.url,
                        &start,
                        &end,
                        &request.page_token,
                        &PAGE_ROWS_ASKED,
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let mut site = availability(row);
                    site.response_time_p50_ms = row.get("p50_ms");
                    site.response_time_p95_ms = row.get("p95_ms");
                    site.response_time_p99_ms = row.get("p99_ms");
                    site.source = "raw".to_owned();
                    site
                })
                .collect()
        } else {
            let resolution = if span <= MINUTE_ROLLUP_LIMIT {
                "minute"
            } else {
                "hour"
            };
            let rows = client
                .query(
                    AVAILABILITY_ROLLUP,
                    &[
                        &request.url,
                        &start,
                        &end,
                        &resolution,
                        &request.page_token,
                        &PAGE_ROWS_ASKED,
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let mut site = availability(row);
                    let buckets = crate::store::latency::from_json(row.get("latency_buckets"));
                    let quantile = |q| crate::store::latency::quantile(&buckets, q);
                    site.response_time_p50_ms = quantile(0.5);
                    site.response_time_p95_ms = quantile(0.95);
                    site.response_time_p99_ms = quantile(0.99);
                    site.source = format!("rollup_{resolution}");
                    site
                })
                .collect()
        };
        Ok(page_of_sites(sites))
    }

    async fn recent_checks(
        &self,
        request: RecentChecksRequest,
    ) -> Result<RecentChecksResponse, ServiceError> {
        if request.url.is_empty() {
            return Err(ServiceError::invalid("url is required"));
        }
        let limit = i64::from(if request.limit == 0 {
            20
        } else {
            request.limit.min(MAX_RECENT)
        });
        let rows = self
            .client()
            .await?
            .query(RECENT_CHECKS, &[&request.url, &limit])
            .await?;
        let checks = rows
            .iter()
            .map(|row| {
                let failure: Option<String> = row.get("failure");
                SiteCheck {
                    agent_id: row.get("agent_id"),
                    stream_id: row.get("stream_id"),
                    seq: row.get::<_, i64>("seq") as u64,
                    checked_at: Some(to_timestamp(row.get("ts"))),
                    url: row.get("url"),
                    method: row.get("method"),
                    status_code: row.get::<_, Option<i32>>("status_code").map(|c| c as u32),
                    ok: row.get("ok"),
                    failure: fleetmon::check_failure::from_name(failure.as_deref()) as i32,
                    error_message: row.get("error_message"),
                    response_time_ms: row.get("response_time_ms"),
                    time_to_first_byte_ms: row.get("time_to_first_byte_ms"),
                    regex: row.get("regex"),
                    regex_matched: row.get("regex_matched"),
                    matched_text: row.get("matched_text"),
                    body_bytes: row.get::<_, i64>("body_bytes") as u64,
                    final_url: row.get("final_url"),
                    tls_cert_not_after: row
                        .get::<_, Option<SystemTime>>("tls_cert_not_after")
                        .map(to_timestamp),
                    check_id: row.get("check_id"),
                    check_version: row.get::<_, i64>("check_version") as u64,
                    // Not stored with the row.
                    interval_seconds: 0,
                }
            })
            .collect();
        Ok(RecentChecksResponse { checks })
    }

    async fn stored_agents(&self) -> Result<ListStoredAgentsResponse, ServiceError> {
        let rows = self.client().await?.query(STORED_AGENTS, &[]).await?;
        let agents = rows
            .iter()
            .map(|row| StoredAgent {
                agent_id: row.get("agent_id"),
                hostname: row.get("hostname"),
                os_name: row.get("os_name"),
                os_version: row.get("os_version"),
                agent_version: row.get("agent_version"),
                first_seen: Some(to_timestamp(row.get("first_seen"))),
                last_seen: Some(to_timestamp(row.get("last_seen"))),
            })
            .collect();
        Ok(ListStoredAgentsResponse { agents })
    }
}

/// A site's availability from a row of `site_availability_raw.sql` or
/// `site_availability_rollup.sql` (the columns both name alike).
fn availability(row: &tokio_postgres::Row) -> SiteAvailability {
    let checks: i64 = row.get("checks");
    let ok_checks: i64 = row.get("ok_checks");
    let status_codes: HashMap<String, u64> = row
        .get::<_, Option<serde_json::Value>>("status_codes")
        .and_then(|v| serde_json::from_value::<HashMap<String, u64>>(v).ok())
        .unwrap_or_default();
    SiteAvailability {
        url: row.get("url"),
        checks: checks as u64,
        ok_checks: ok_checks as u64,
        uptime_percent: if checks > 0 {
            100.0 * ok_checks as f64 / checks as f64
        } else {
            0.0
        },
        response_time_min_ms: row.get("min_ms"),
        response_time_max_ms: row.get("max_ms"),
        response_time_avg_ms: row.get("avg_ms"),
        status_codes,
        ..Default::default()
    }
}

/// A page of availability answers stops growing once its encoded size passes this.
pub const SITES_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Most sites a page of availability answers holds.
pub const SITES_PAGE_ROWS: usize = 1000;
/// The rows a page's query asks for: one more than a page, to know whether more follow.
const PAGE_ROWS_ASKED: i64 = SITES_PAGE_ROWS as i64 + 1;

/// A page from `sites`, the rows a page's query gave (the sites whose URL sorts after
/// the page token, in URL order, at most [`PAGE_ROWS_ASKED`]): up to
/// [`SITES_PAGE_ROWS`] sites and [`SITES_PAGE_BYTES`] (one at least), with the token of
/// the next page when more follow.
fn page_of_sites(mut sites: Vec<SiteAvailability>) -> SiteAvailabilityResponse {
    let mut bytes = 0;
    let fits = sites
        .iter()
        .take(SITES_PAGE_ROWS)
        .take_while(|site| {
            let fits = bytes == 0 || bytes < SITES_PAGE_BYTES;
            bytes += prost::Message::encoded_len(*site);
            fits
        })
        .count();
    let next_page_token = if fits < sites.len() {
        sites[fits - 1].url.clone()
    } else {
        String::new()
    };
    sites.truncate(fits);
    SiteAvailabilityResponse {
        sites,
        next_page_token,
    }
}

/// Each call's errors become statuses in one place, [`ServiceError`]'s `From`.
#[tonic::async_trait]
impl History for HistoryService {
    #[instrument(skip_all)]
    async fn get_host_series(
        &self,
        request: Request<HostSeriesRequest>,
    ) -> Result<Response<HostSeries>, Status> {
        Ok(Response::new(self.host_series(request.into_inner()).await?))
    }

    #[instrument(skip_all)]
    async fn get_site_availability(
        &self,
        request: Request<SiteAvailabilityRequest>,
    ) -> Result<Response<SiteAvailabilityResponse>, Status> {
        Ok(Response::new(
            self.site_availability(request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list_recent_checks(
        &self,
        request: Request<RecentChecksRequest>,
    ) -> Result<Response<RecentChecksResponse>, Status> {
        Ok(Response::new(
            self.recent_checks(request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn get_availability_report(
        &self,
        request: Request<AvailabilityReportRequest>,
    ) -> Result<Response<AvailabilityReport>, Status> {
        let client = self.client().await.map_err(Status::from)?;
        Ok(Response::new(
            crate::api::reports::availability_report(&client, request.into_inner()).await?,
        ))
    }

    #[instrument(skip_all)]
    async fn list_stored_agents(
        &self,
        _request: Request<ListStoredAgentsRequest>,
    ) -> Result<Response<ListStoredAgentsResponse>, Status> {
        Ok(Response::new(self.stored_agents().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_come_in_pages_that_stay_small_whatever_the_urls() {
        let site = |url: String| SiteAvailability {
            url,
            ..Default::default()
        };
        // Long URLs fill a page by its bytes, short ones by its count of sites.
        for (count, path) in [(3000, 4000), (2500, 8)] {
            let sites: Vec<_> = (0..count)
                .map(|i| site(format!("https://x.example/{i:04}/{}", "p".repeat(path))))
                .collect();
            let (mut seen, mut token, mut pages) = (Vec::new(), String::new(), 0);
            loop {
                // What the page's query gives: the sites after the token, in URL order.
                let rows = sites
                    .iter()
                    .filter(|s| s.url > token)
                    .take(PAGE_ROWS_ASKED as usize)
                    .cloned()
                    .collect();
                let page = page_of_sites(rows);
                pages += 1;
                assert!(page.sites.len() <= SITES_PAGE_ROWS);
                assert!(prost::Message::encoded_len(&page) < SITES_PAGE_BYTES + 8 * 1024);
                seen.extend(page.sites.into_iter().map(|s| s.url));
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            let all: Vec<String> = sites.into_iter().map(|s| s.url).collect();
            assert_eq!(seen, all, "every site once, in order");
            let least = (count * (path + 30)).div_ceil(SITES_PAGE_BYTES);
            assert!(
                pages >= least.max(count.div_ceil(SITES_PAGE_ROWS)) && pages <= least + 3,
                "{count} sites of {path} bytes in {pages} pages"
            );
        }
    }
}
