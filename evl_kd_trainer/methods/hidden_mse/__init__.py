"""FitNets-style hidden-state regression (Romero et al., ICLR 2015): the simplest feature baseline."""

from evl_kd_trainer.methods.hidden_mse.config import HiddenMSEConfig
from evl_kd_trainer.methods.hidden_mse.loss import hidden_mse_loss
from evl_kd_trainer.methods.hidden_mse.method import HiddenMSEMethod

__all__ = ["HiddenMSEConfig", "HiddenMSEMethod", "hidden_mse_loss"]
