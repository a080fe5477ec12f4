//! etcd's `KV` service.

use std::sync::Arc;

use chorus_kv::{Command, CompactionRequest, Query, QueryResponse, Response};
use prost::Message;
use tonic::{Request, Response as Reply, Status};

use crate::backend::Backend;
use crate::convert;
use crate::error::unexpected_answer;
use crate::pb::etcdserverpb as pb;

pub(crate) struct KvService(pub(crate) Arc<Backend>);

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Reply<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let (range, serializable) = convert::range_request(request)?;
        match self
            .0
            .read("Range", size, Query::Range(range), serializable)
            .await?
        {
            QueryResponse::Range(response) => {
                let header = self.0.header(response.header.revision);
                Ok(Reply::new(convert::range_response(response, header)))
            }
            _ => Err(unexpected_answer()),
        }
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Reply<pb::PutResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let command = Command::Put(convert::put_request(request));
        match self.0.write("Put", size, command).await? {
            Response::Put(response) => {
                let header = self.0.header(response.header.revision);
                Ok(Reply::new(convert::put_response(response, header)))
            }
            _ => Err(unexpected_answer()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Reply<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let command = Command::DeleteRange(convert::delete_request(request));
        match self.0.write("DeleteRange", size, command).await? {
            Response::DeleteRange(response) => {
                let header = self.0.header(response.header.revision);
                Ok(Reply::new(convert::delete_response(response, header)))
            }
            _ => Err(unexpected_answer()),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Reply<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let txn = convert::txn_request(request)?;
        // A txn that only reads is a read (etcd serves it without a log
        // entry too); it is linearizable unless every range in it asked
        // for serializable, which the converted request no longer knows:
        // read-only txns are always linearizable here.
        let response = if txn.is_read_only() {
            match self.0.read("Txn", size, Query::Txn(txn), false).await? {
                QueryResponse::Txn(response) => response,
                _ => return Err(unexpected_answer()),
            }
        } else {
            match self.0.write("Txn", size, Command::Txn(txn)).await? {
                Response::Txn(response) => response,
                _ => return Err(unexpected_answer()),
            }
        };
        let header = self.0.header(response.header.revision);
        Ok(Reply::new(convert::txn_response(response, header)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Reply<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let size = request.encoded_len();
        let command = Command::Compact(CompactionRequest {
            revision: request.revision,
        });
        match self.0.write("Compact", size, command).await? {
            Response::Compact(response) => Ok(Reply::new(pb::CompactionResponse {
                header: Some(self.0.header(response.header.revision)),
            })),
            _ => Err(unexpected_answer()),
        }
    }
}
