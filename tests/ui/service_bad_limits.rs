#[lepus::service(queue = "q", time_limit = "soon", blocking = "yes")]
pub trait BadServiceLimits {
    async fn a(&self) -> u64;
}

#[lepus::service(queue = "q")]
pub trait BadMethodLimits {
    #[lepus(time_limit = "0s")]
    async fn zero(&self) -> u64;
    #[lepus(prefetch = 4)]
    async fn unknown(&self) -> u64;
    #[lepus(blocking = true)]
    #[lepus(blocking = false, name = "")]
    async fn twice(&self) -> u64;
}

fn main() {}
