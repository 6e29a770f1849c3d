//! Statistical models of the customer base, exposed to SQL as DataFusion functions so the model
//! logic stays visible in the marts: BG/NBD (purchases and dropout) and Gamma-Gamma (spend).

pub mod bgnbd;
pub mod gamma_gamma;
mod optimize;
pub mod special;
pub mod udf;
